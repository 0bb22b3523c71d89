"""Our exact patching engine vs TransformerLens' ``patching`` module, same model, inputs and metric.

Experiment (identical on both sides): on SmolLM2-135M, patch every head's output (``hook_z``,
all positions: TL's ``get_act_patch_attn_head_out_all_pos``) and the residual stream at P0 in
every layer (``get_act_patch_resid_pre`` restricted to position 0 through ``index_df``) with
the ``shift`` counterfactual's activations, and measure the sink score (Gu et al. alpha_0) of
every layer. TL's metric can only see logits, so it reads the sink through permanent hooks on
``hook_pattern``; TL runs the whole model (with unembedding) once per patch, ours reuses the
clean prefix, stops after the last layer and stacks patches into one batch.

The two sides alternate (ours, TL, ours, TL, ... ``--repeats`` times) in one process, so a
noisy stretch of a shared machine hits both; each side's time is its fastest repeat. Both run
under the same allocator settings (building the ``Patcher`` applies ``circuits.patching.allocator``).

The last line printed is one JSON object with ``speedup`` (TL time / ours) and ``max_abs_diff``.

    python benchmarks/bench_patching.py [--n-prompts 4] [--n-tokens 32] [--layers 30] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import pandas as pd
import torch


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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=128)
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternating repeats per side (the fastest counts)"
    )
    parser.add_argument("--skip-tl", action="store_true", help="time only our engine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformer_lens.patching as tlp
    from transformer_lens import ActivationCache
    from transformer_lens.utilities import get_act_name

    from circuits.metrics import sink_score
    from circuits.patching import Patcher, SinkMetric, Site
    from circuits.prompts import prompt_set
    from circuits.zoo import load_model

    zm = load_model(args.model, progress=False)
    model = zm.model
    tokens = prompt_set(zm, n_prompts=args.n_prompts, n_tokens=args.n_tokens, bos=zm.natural_bos)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    head_layers = n_layers if args.layers is None else args.layers
    receivers = list(range(n_layers))

    # ---- ours
    t = time.perf_counter()
    patcher = Patcher(model, tokens, "shift", max_rows=args.max_rows)
    t_setup = time.perf_counter() - t
    metric = SinkMetric(receivers)
    head_grid = [
        Site("head", la, head=h, positions=None)
        for la in range(head_layers)
        for h in range(n_heads)
    ]
    resid_grid = [Site("resid_pre", la, positions=(0,)) for la in range(n_layers)]

    def run_ours() -> tuple[float, float, torch.Tensor, torch.Tensor]:
        t = time.perf_counter()
        heads = patcher.patch(head_grid, metric).values
        t_heads = time.perf_counter() - t
        t = time.perf_counter()
        resid = patcher.patch(resid_grid, metric).values
        return t_heads, time.perf_counter() - t, heads, resid

    # ---- TransformerLens
    store: dict[int, torch.Tensor] = {}

    def record(pattern, hook):
        store[hook.layer()] = sink_score(pattern).mean()

    def tl_metric(logits):
        return torch.stack([store[la] for la in receivers]).mean()

    source = ActivationCache(patcher.cf, model)
    head_df = pd.DataFrame(
        [(la, h) for la in range(head_layers) for h in range(n_heads)], columns=["layer", "head"]
    )
    resid_df = pd.DataFrame([(la, 0) for la in range(n_layers)], columns=["layer", "pos"])

    def run_tl() -> tuple[float, float, torch.Tensor, torch.Tensor]:
        for layer in receivers:
            model.add_hook(get_act_name("pattern", layer), record, is_permanent=True)
        try:
            with torch.inference_mode():
                t = time.perf_counter()
                heads = tlp.get_act_patch_attn_head_out_all_pos(
                    model, tokens, source, tl_metric, index_axis_names=None, index_df=head_df
                )
                t_heads = time.perf_counter() - t
                t = time.perf_counter()
                resid = tlp.get_act_patch_resid_pre(
                    model, tokens, source, tl_metric, index_axis_names=None, index_df=resid_df
                )
                return t_heads, time.perf_counter() - t, heads, resid
        finally:
            model.reset_hooks(including_permanent=True)

    ours_runs, tl_runs = [], []
    for _ in range(args.repeats):
        ours_runs.append(run_ours())
        if not args.skip_tl:
            tl_runs.append(run_tl())
    t_heads = min(r[0] for r in ours_runs)
    t_resid = min(r[1] for r in ours_runs)
    ours_heads, ours_resid = ours_runs[-1][2], ours_runs[-1][3]
    ours_s = t_heads + t_resid
    result = {
        "model": zm.name,
        "n_prompts": args.n_prompts,
        "n_tokens": args.n_tokens,
        "head_patches": len(head_grid),
        "resid_patches": len(resid_grid),
        "repeats": args.repeats,
        "ours_s": round(ours_s, 3),
        "ours_heads_s": round(t_heads, 3),
        "ours_resid_s": round(t_resid, 3),
        "ours_all_runs_s": [round(r[0] + r[1], 2) for r in ours_runs],
        "ours_setup_s (clean + counterfactual runs, not counted)": round(t_setup, 3),
        "threads": args.threads,
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    if not args.skip_tl:
        tl_heads_s = min(r[0] for r in tl_runs)
        tl_resid_s = min(r[1] for r in tl_runs)
        tl_heads, tl_resid = tl_runs[-1][2], tl_runs[-1][3]
        tl_s = tl_heads_s + tl_resid_s
        diff = max(
            (ours_heads - tl_heads).abs().max().item(), (ours_resid - tl_resid).abs().max().item()
        )
        result.update(
            {
                "tl_s": round(tl_s, 3),
                "tl_heads_s": round(tl_heads_s, 3),
                "tl_resid_s": round(tl_resid_s, 3),
                "tl_all_runs_s": [round(r[0] + r[1], 2) for r in tl_runs],
                "speedup_heads": round(tl_heads_s / t_heads, 2),
                "speedup_resid": round(tl_resid_s / t_resid, 2),
                "speedup": round(tl_s / ours_s, 2),
                "max_abs_diff": diff,
            }
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
