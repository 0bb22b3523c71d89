"""How patching cost grows with prompts, tokens and model: a head grid, ours vs TransformerLens'
``patching`` module vs the batched TransformerLens hook loop vs the ideal time, and ``discover``.

Grid: every head (``hook_z``, all positions) of ``--head-layers`` (default: layer 0 and the middle
layer), ``shift`` counterfactual, sink score of every layer (sides: ``benchmarks/_sides.py``).
Sizes: prompts {4, 8, 16} at 64 tokens and tokens {32, 64, 128, 256} at 8 prompts (the cross
shape through 8 x 64, the size ``discover`` uses), per model. One run per side and size (the
sides run back to back, so a noisy stretch hits them alike). With ``--discover`` each size also
runs ``p0-circuits discover`` in a child process (wall time, peak RSS).

Prints one JSON object per (model, size); redirect to a file and plot it with
``benchmarks/plot_scaling.py``.

    python benchmarks/bench_scaling.py [--models smollm2-135m gemma3-270m] [--discover] > scaling.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _sides as S  # noqa: E402

SIZES = [(4, 64), (8, 64), (16, 64), (8, 32), (8, 128), (8, 256)]


def discover_run(model: str, n_prompts: int, n_tokens: int, extra: tuple[str, ...] = ()) -> dict:
    """``p0-circuits discover`` in a child process: wall time, the child's own peak RSS
    (``os.wait4``), the patching time it reports (every stage but the model load) and each
    stage's time; ``extra``: more ``discover`` flags (e.g. ``--max-memory 7.5``)."""
    out = Path(tempfile.mkdtemp(prefix="scaling-discover-")) / "out"
    cmd = [sys.executable, "-m", "circuits", "discover", "--model", model, "--out", str(out)]
    cmd += ["--n-prompts", str(n_prompts), "--n-tokens", str(n_tokens), "--quiet", *extra]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        return {"discover_error": (proc.stderr.read() if proc.stderr else "").splitlines()[-1:]}
    record = json.loads((out / "patching.json").read_text())
    timings = record["timings_s"]
    return {
        "discover_wall_s": round(wall, 2),
        "discover_peak_rss_mb": round(usage.ru_maxrss / 1024),
        "discover_patching_s": round(timings["total"] - timings.get("load_model", 0.0), 2),
        "max_rows": record["config"]["max_rows"],
        "stages_s": {k: round(v, 1) for k, v in timings.items()},
    }


def measure_size(zm, grid, n_prompts: int, n_tokens: int, args) -> dict:
    """Every side on one size (see the module docstring)."""
    from circuits.patching import Patcher, SinkScore
    from circuits.patching.allocator import keep_freed_memory
    from circuits.prompts import prompt_set

    keep_freed_memory()  # as discover does: the engine's buffers reused

    model, cfg = zm.model, zm.model.cfg
    receivers = list(range(cfg.n_layers))
    tokens = prompt_set(zm, n_prompts=n_prompts, n_tokens=n_tokens, bos=zm.natural_bos)
    patcher = Patcher(model, tokens, "shift", max_rows=args.max_rows)
    metric = SinkScore(receivers)
    t_fwd = S.clean_forward_s(model, tokens)
    row = {
        "model": zm.name,
        "n_prompts": n_prompts,
        "n_tokens": n_tokens,
        "patches": len(grid),
        "head_layers": sorted({s.layer for s in grid}),
        "clean_forward_s": round(t_fwd, 4),
        "ideal_s": round(S.ideal_s(cfg.n_layers, grid, t_fwd), 3),
        "flop_bound": round(S.flop_bound(cfg, n_tokens, [s.layer for s in grid]), 3),
    }
    sides = {
        "ours": lambda: S.ours(patcher, grid, metric),
        "batched_tl": lambda: S.batched_transformer_lens(
            model, tokens, patcher, grid, receivers, args.max_rows
        ),
    }
    if not args.skip_tl:
        sides["tl"] = lambda: S.transformer_lens_module(model, tokens, patcher, grid, receivers)
    values = {}
    for side, fn in sides.items():
        seconds, values[side], rss, extra = fn()
        row[f"{side}_s"] = round(seconds, 3)
        row[f"{side}_peak_rss_mb"] = round(rss)
        row[f"{side}_extra_rss_mb"] = round(extra)
    row["max_abs_diff"] = max((v - values["ours"]).abs().max().item() for v in values.values())
    row["efficiency"] = round(row["ideal_s"] / row["ours_s"], 3)
    row["speedup_vs_batched_tl"] = round(row["batched_tl_s"] / row["ours_s"], 2)
    if "tl_s" in row:
        row["speedup"] = round(row["tl_s"] / row["ours_s"], 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--head-layers", type=int, nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=128)
    parser.add_argument("--skip-tl", action="store_true")
    parser.add_argument("--discover", action="store_true")
    parser.add_argument(
        "--discover-max-tokens", type=int, default=128, help="skip discover on longer prompts"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from circuits.patching import Site
    from circuits.zoo import load_model

    for name in args.models:
        zm = load_model(name, progress=False)
        cfg = zm.model.cfg
        layers = args.head_layers or [0, cfg.n_layers // 2]
        grid = [
            Site("head", la, head=h, positions=None) for la in layers for h in range(cfg.n_heads)
        ]
        for n_prompts, n_tokens in SIZES:
            row = measure_size(zm, grid, n_prompts, n_tokens, args)
            if args.discover and n_tokens <= args.discover_max_tokens:
                row.update(discover_run(name, n_prompts, n_tokens))
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
