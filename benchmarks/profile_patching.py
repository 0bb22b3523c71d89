"""Where the time of one exact patching sweep goes: matmuls, attention softmax, norms,
elementwise math, copies, allocation, and Python (hooks, TransformerLens bookkeeping).

Experiment: ``Patcher.patch`` over the head grid of ``bench_patching.py`` (every head's ``hook_z``
in the first ``--layers`` layers, at all positions or, ``--grid p0``, at P0; ``shift``
counterfactual, sink metric over every layer), profiled with ``torch.profiler`` (CPU, self time
per operator). Operators are grouped by what they do; "python and dispatch" is the wall time no
operator accounts for. ``--whole-blocks`` turns off the prefix run of the patched block
(``circuits.patching.prefix``): the "before" of that change.

The last line printed is one JSON object: wall time, and per group its seconds and share.

    python benchmarks/profile_patching.py [--n-prompts 8] [--n-tokens 64] [--layers 30] [--grid full|p0] [--whole-blocks]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

GROUPS = {
    "matmul": ("mm", "bmm", "addmm", "matmul", "linear", "einsum", "baddbmm", "_unsafe_view"),
    "softmax": ("softmax", "_softmax", "log_softmax"),
    "norm": ("layer_norm", "native_layer_norm", "rsqrt", "pow", "var", "mean"),
    "copy": (
        "copy_",
        "cat",
        "clone",
        "index_put_",
        "repeat",
        "contiguous",
        "to",
        "_to_copy",
        "index",
        "slice_scatter",
        "expand",
        "stack",
    ),
    "allocation": ("empty", "empty_strided", "resize_", "zeros", "ones", "full", "new_empty"),
}


def group_of(name: str) -> str:
    op = name.removeprefix("aten::")
    for group, ops in GROUPS.items():
        if op in ops:
            return group
    return "elementwise and other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--n-tokens", type=int, default=64)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=128)
    parser.add_argument("--grid", choices=("full", "p0"), default="full")
    parser.add_argument("--whole-blocks", action="store_true", help="no prefix runs (before)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from torch.profiler import ProfilerActivity, profile

    from circuits.patching import Patcher, SinkScore, Site
    from circuits.patching.allocator import keep_freed_memory
    from circuits.prompts import prompt_set
    from circuits.zoo import load_model

    keep_freed_memory()  # as discover does: the engine's buffers reused

    zm = load_model(args.model, progress=False)
    cfg = zm.model.cfg
    tokens = prompt_set(zm, n_prompts=args.n_prompts, n_tokens=args.n_tokens, bos=zm.natural_bos)
    patcher = Patcher(
        zm.model, tokens, "shift", max_rows=args.max_rows, prefix_blocks=not args.whole_blocks
    )
    metric = SinkScore(range(cfg.n_layers))
    n = cfg.n_layers if args.layers is None else args.layers
    pos = None if args.grid == "full" else (0,)
    grid = [Site("head", la, head=h, positions=pos) for la in range(n) for h in range(cfg.n_heads)]
    patcher.patch(grid[: cfg.n_heads], metric)  # warm-up
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        patcher.patch(grid, metric)
    wall = time.perf_counter() - start
    totals: dict[str, float] = {}
    for evt in prof.key_averages():
        if not evt.key.startswith("aten::"):
            continue
        g = group_of(evt.key)
        totals[g] = totals.get(g, 0.0) + evt.self_cpu_time_total / 1e6
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    accounted = sum(totals.values())
    totals["python and dispatch"] = max(0.0, wall - accounted)
    result = {
        "model": zm.name,
        "n_prompts": args.n_prompts,
        "n_tokens": args.n_tokens,
        "patches": len(grid),
        "grid": args.grid,
        "prefix_blocks": not args.whole_blocks,
        "wall_s (profiled)": round(wall, 3),
        "groups_s": {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
        "groups_share": {
            k: round(v / wall, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])
        },
        "top_ops": [(e.key, round(e.self_cpu_time_total / 1e6, 3), e.count) for e in top],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
