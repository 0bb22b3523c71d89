"""Our exact patching engine vs TransformerLens' ``patching`` module and vs a batched
TransformerLens hook loop, with the ideal time beside them (sides: ``benchmarks/_sides.py``).

Experiment (identical on every side): patch every head's output (``hook_z``; ``--grid full``:
at all positions, TransformerLens' ``get_act_patch_attn_head_out_all_pos``; ``--grid p0``: at
P0 only, as ``discover`` does, TL's ``get_act_patch_attn_head_out_by_pos``) in the first
``--layers`` layers and the residual stream at P0 (``resid_pre``) in every layer with the
``shift`` counterfactual's activations, and measure the sink score (Gu et al. alpha_0) of
every layer.

The sides alternate (ours, tl, batched_tl, ours, ... ``--repeats`` times) in one process, so a
noisy stretch of a shared machine hits each; each side's time is its fastest repeat. The last
line printed is one JSON object with ``speedup`` (tl / ours), ``speedup_vs_batched_tl``,
``flop_bound``, ``efficiency`` (ideal / ours) and ``max_abs_diff`` (largest difference between
any two sides).

    python benchmarks/bench_patching.py [--n-prompts 4] [--n-tokens 32] [--grid full|p0] [--layers 30] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _sides as S  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-prompts", type=int, default=4)
    parser.add_argument("--n-tokens", type=int, default=32)
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="patch heads in the first N layers only (default all)",
    )
    parser.add_argument(
        "--grid", choices=("full", "p0"), default="full", help="head patches at all positions or P0"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=128)
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternating repeats per side (the fastest counts)"
    )
    parser.add_argument("--skip-tl", action="store_true", help="leave out the patching-module side")
    parser.add_argument(
        "--whole-blocks-side",
        action="store_true",
        help="also time ours without prefix runs (Patcher(prefix_blocks=False)): before/after",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from circuits.patching import Patcher, SinkScore, Site
    from circuits.patching.allocator import keep_freed_memory
    from circuits.prompts import prompt_set
    from circuits.zoo import load_model

    keep_freed_memory()  # as discover does: the engine's buffers reused

    zm = load_model(args.model, progress=False, device=args.device)
    model = zm.model
    tokens = prompt_set(zm, n_prompts=args.n_prompts, n_tokens=args.n_tokens, bos=zm.natural_bos)
    tokens = tokens.to(model.cfg.device)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    head_layers = n_layers if args.layers is None else args.layers
    receivers = list(range(n_layers))

    t = time.perf_counter()
    patcher = Patcher(model, tokens, "shift", max_rows=args.max_rows)
    t_setup = time.perf_counter() - t
    metric = SinkScore(receivers)
    grids = {
        "heads": [
            Site("head", la, head=h, positions=None if args.grid == "full" else (0,))
            for la in range(head_layers)
            for h in range(n_heads)
        ],
        "resid": [Site("resid_pre", la, positions=(0,)) for la in range(n_layers)],
    }
    sides = {
        "ours": lambda g: S.ours(patcher, g, metric),
        "batched_tl": lambda g: S.batched_transformer_lens(
            model, tokens, patcher, g, receivers, args.max_rows
        ),
    }
    if args.whole_blocks_side:
        whole = Patcher(model, tokens, "shift", max_rows=args.max_rows, prefix_blocks=False)
        sides["ours_whole_blocks"] = lambda g: S.ours(whole, g, metric)
    if not args.skip_tl:
        sides["tl"] = lambda g: S.transformer_lens_module(model, tokens, patcher, g, receivers)
    runs: dict[str, dict[str, list]] = {side: {g: [] for g in grids} for side in sides}
    forwards = []
    for _ in range(args.repeats):
        forwards.append(S.clean_forward_s(model, tokens))
        for side, fn in sides.items():
            for g, sites in grids.items():
                runs[side][g].append(fn(sites))

    def best(side: str, g: str) -> float:
        return min(r[0] for r in runs[side][g])

    t_fwd = min(forwards)
    ideal = {g: S.ideal_s(n_layers, sites, t_fwd) for g, sites in grids.items()}
    total = {side: sum(best(side, g) for g in grids) for side in sides}
    ref = {g: runs["ours"][g][-1][1] for g in grids}
    diff = max((runs[side][g][-1][1] - ref[g]).abs().max().item() for side in sides for g in grids)
    starts = [s.layer for sites in grids.values() for s in sites]
    result = {
        "model": zm.name,
        "device": str(model.cfg.device),
        "n_prompts": args.n_prompts,
        "n_tokens": args.n_tokens,
        "grid": args.grid,
        "head_patches": len(grids["heads"]),
        "resid_patches": len(grids["resid"]),
        "repeats": args.repeats,
        "clean_forward_s": round(t_fwd, 4),
        "ideal_s": round(sum(ideal.values()), 3),
        **{f"{side}_s": round(total[side], 3) for side in sides},
        **{f"{side}_{g}_s": round(best(side, g), 3) for side in sides for g in grids},
        **{f"ideal_{g}_s": round(ideal[g], 3) for g in grids},
        "ours_all_runs_s": [
            round(sum(runs["ours"][g][i][0] for g in grids), 2) for i in range(args.repeats)
        ],
        "peak_rss_mb": {
            side: round(max(r[2] for g in grids for r in runs[side][g])) for side in sides
        },
        "ours_setup_s (clean + counterfactual runs, not counted)": round(t_setup, 3),
        "flop_bound": round(S.flop_bound(model.cfg, args.n_tokens, starts), 3),
        "efficiency": round(sum(ideal.values()) / total["ours"], 3),
        **{f"efficiency_{g}": round(ideal[g] / best("ours", g), 3) for g in grids},
        "speedup_vs_batched_tl": round(total["batched_tl"] / total["ours"], 2),
        "threads": args.threads,
        "max_rows": args.max_rows,
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    if "tl" in sides:
        result["speedup_heads"] = round(best("tl", "heads") / best("ours", "heads"), 2)
        result["speedup_resid"] = round(best("tl", "resid") / best("ours", "resid"), 2)
        result["speedup"] = round(total["tl"] / total["ours"], 2)
    result["max_abs_diff"] = diff
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
