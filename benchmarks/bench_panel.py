"""The live patching panel's latency, as ratios to one clean forward of the same prompts.

SmolLM2 at 4 prompts x 32 tokens (issue 21's setting), all in one process, each side timed
``--repeats`` times (median): a clean forward (``model(tokens, return_type=None)``); opening the
panel's session (the engine's clean and counterfactual runs and the P0-stream estimate of every
component and head, i.e. what the map needs before the first click); one click's estimate (no
forward); one click's exact per-layer curve for ``mlp0@p0`` and ``attn0@p0``; and the rest of a
click (faithfulness kept / ablated and the receiver head's pattern). Goals (issue 21): exact
curve <= 1.5 forwards, estimate <= 0.1 forward, open <= 10 s. One JSON line.

    python benchmarks/bench_panel.py [--model smollm2-135m] [--prompts 4] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from circuits.panel.session import PatchSession
    from circuits.prompts import prompt_set
    from circuits.zoo.load import load_model

    zm = load_model(args.model, progress=False)
    tokens = prompt_set(zm, n_prompts=args.prompts, n_tokens=args.tokens, bos=zm.natural_bos)
    model = zm.model
    with torch.inference_mode():
        model(tokens, return_type=None)  # warm
    forward = _median(lambda: model(tokens, return_type=None), args.repeats)

    start = time.perf_counter()
    session = PatchSession(model, tokens)
    session.single_estimates()
    session.clean_curve()
    opened = time.perf_counter() - start

    row = {
        "model": args.model,
        "n_prompts": args.prompts,
        "n_tokens": args.tokens,
        "threads": torch.get_num_threads(),
        "clean_forward_s": round(forward, 4),
        "open_s": round(opened, 3),
    }
    for name in ("mlp0@p0", "attn0@p0", "mlp11@p0"):
        session.curve([name])  # warm (first use of a hook set)
        t = _median(lambda name=name: session.curve([name]), args.repeats)
        row[f"exact_curve_{name}_s"] = round(t, 4)
        row[f"exact_curve_{name}_forwards"] = round(t / forward, 2)
    t = _median(lambda: session.estimate(["mlp0@p0", "attn0@p0"]), args.repeats)
    row["estimate_s"] = round(t, 5)
    row["estimate_forwards"] = round(t / forward, 4)
    rest = _median(
        lambda: (session.faithfulness(["mlp0@p0"]), session.patterns(["mlp0@p0"])), args.repeats
    )
    row["rest_of_click_s"] = round(rest, 4)
    row["rest_of_click_forwards"] = round(rest / forward, 2)
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
