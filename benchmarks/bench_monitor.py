"""What the live P0 sink monitor costs a training run on this machine, at its defaults.

Experiment: the calibrated Bigram-Backcopy run with BOS (``results/emergence/README.md``: 3
layers, d 128, context 64, batch 64) trained for ``--steps`` steps twice from the same seed, side
by side in one process: without a monitor, and with ``P0SinkMonitor`` at its defaults (every 100
steps, exact patching every 10th evaluation, the 32-sequence batch ``trace`` uses). Reported: the
wall time of each side, the monitor's own time (the sum of its rows' ``seconds``), and both as a
share of the unmonitored training time. The monitor fixes glibc's mmap and trim thresholds
(``circuits.patching.allocator.keep_freed_memory``, as ``discover`` and the panel do): without
that, the buffers each evaluation frees move glibc's dynamic threshold and the training after it
runs about 10% slower (measured: 4 rounds of 300 steps, 50.9-55.8 s without the monitor, 56.9-59.5
s with it, of which the monitor's own time was 0.7 s); both sides run with it. The sides alternate (``--rounds``) so a busy neighbour
hits both; run it with nothing else running. The goal (issue: live convergence monitor): at most
2% at the default ``every``.

    python benchmarks/bench_monitor.py [--steps 300] [--rounds 2] [--every 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from circuits.emergence.monitor import MONITOR_FILE, P0SinkMonitor
from circuits.patching.allocator import keep_freed_memory
from circuits.training.config import TrainConfig
from circuits.training.data import DataSource
from circuits.training.loop import train

BB_BOS = dict(
    data="bigram-backcopy", n_layers=3, d_model=128, n_heads=1, norm="ln",
    positional="learned", mlp="relu", n_ctx=64, batch_size=64, lr=3e-3, warmup=100,
    weight_decay=0.01, seed=0, bos=True, n_checkpoints=2, save_every=0,
)  # fmt: skip


def side(steps: int, every: int | None, exact_every: int) -> tuple[float, float, int]:
    """(training wall seconds, the monitor's own seconds, evaluations) of one run."""
    config = TrainConfig(**{**BB_BOS, "steps": steps})
    with tempfile.TemporaryDirectory() as tmp:
        monitor = None
        if every:
            monitor = P0SinkMonitor(
                DataSource(config).eval_batch(32),
                every=every,
                path=Path(tmp) / "run" / MONITOR_FILE,
                bos=True,
                exact_every=exact_every,
            )
        start = time.perf_counter()
        train(config, Path(tmp) / "run", progress=False, monitor=monitor)
        wall = time.perf_counter() - start
        own = sum(r["seconds"] for r in monitor.history) if monitor else 0.0
        return wall, own, len(monitor.history) if monitor else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--exact-every", type=int, default=10)
    args = parser.parse_args()
    keep_freed_memory()  # the monitor tunes glibc's allocator (as discover does): both sides run so
    base, mon, own, n = [], [], [], 0
    for i in range(args.rounds):  # the order alternates, so drift hits both sides
        for monitored in (False, True) if i % 2 == 0 else (True, False):
            wall, seconds, evaluations = side(
                args.steps, args.every if monitored else None, args.exact_every
            )
            (mon if monitored else base).append(wall)
            if monitored:
                own.append(seconds)
                n = evaluations
    print("rounds, without:", [round(x, 2) for x in base], "with:", [round(x, 2) for x in mon])
    b, m, o = min(base), min(mon), min(own)
    print(
        json.dumps(
            {
                "steps": args.steps,
                "every": args.every,
                "exact_every": args.exact_every,
                "evaluations": n,
                "train_s_without": round(b, 2),
                "train_s_with": round(m, 2),
                "monitor_own_s": round(o, 3),
                "overhead_wall_share": round((m - b) / b, 4),
                "overhead_own_share": round(o / b, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
