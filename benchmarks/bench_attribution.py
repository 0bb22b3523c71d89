"""How well the first-pass estimates rank P0 components, against exact patching.

Experiment: discover's first pass on a real model. Sites: every P0 component (embed, attn_l,
mlp_l for each layer below the last receiver); metric: discover's sink score over layers
``first_receiver``..last; counterfactual: discover's (``shift`` by default). Exact effects come
from ``Patcher.patch`` (one exact patch per component); the estimates from
``p0_stream_estimate`` (exact on P0's keys, other positions clean: discover's default first
pass) and ``attribution_patch(..., ig_steps=k)`` for each k in ``--ig-steps`` (1 = plain
attribution patching, the gradient at the clean run; k > 1 = integrated gradients along the
clean -> counterfactual path). For each estimate: Pearson r with the exact effects, the overlap of the top-10 by
|effect|, Spearman rank correlation, and the wall time beside the exact sweep's.

The last line printed is one JSON object with a row per (model, estimate).

    python benchmarks/bench_attribution.py [--models smollm2-135m gemma3-270m] [--ig-steps 1 2 4 8 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort().argsort().double()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--n-tokens", type=int, default=64)
    parser.add_argument("--counterfactual", default="shift")
    parser.add_argument("--ig-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from circuits.circuit.config import DiscoverConfig
    from circuits.patching import Patcher, SinkScore
    from circuits.patching.allocator import keep_freed_memory
    from circuits.patching.attribution import attribution_patch, pearson
    from circuits.patching.sites import component_sites
    from circuits.patching.stream import p0_stream_estimate
    from circuits.prompts import prompt_set
    from circuits.zoo import load_model

    keep_freed_memory()  # as discover does: the engine's buffers reused

    rows = []
    for name in args.models:
        zm = load_model(name, progress=False)
        cfg = zm.model.cfg
        tokens = prompt_set(
            zm, n_prompts=args.n_prompts, n_tokens=args.n_tokens, bos=zm.natural_bos
        )
        receivers = DiscoverConfig().receiver_layers(cfg.n_layers)
        metric = SinkScore(receivers)
        patcher = Patcher(zm.model, tokens, args.counterfactual, max_rows=64)
        sites = component_sites(cfg.n_layers, list(range(max(receivers))), positions=(0,))
        t = time.perf_counter()
        exact = patcher.patch(sites, metric).effects
        t_exact = time.perf_counter() - t
        k10 = min(10, len(sites))
        top = set(exact.abs().topk(k10).indices.tolist())
        estimates = [("p0-stream", None)] + [("attribution", k) for k in args.ig_steps]
        for method, k in estimates:
            t = time.perf_counter()
            if method == "p0-stream":
                est = p0_stream_estimate(patcher, sites, metric).effects
            else:
                est = attribution_patch(patcher, sites, metric, ig_steps=k).effects
            t_est = time.perf_counter() - t
            rows.append(
                {
                    "model": zm.name,
                    "estimate": method,
                    "ig_steps": k,
                    "n_components": len(sites),
                    "pearson_r": round(pearson(est, exact) or float("nan"), 4),
                    "spearman_r": round(pearson(_ranks(est), _ranks(exact)) or float("nan"), 4),
                    "top10_overlap": len(top & set(est.abs().topk(k10).indices.tolist())),
                    "estimate_s": round(t_est, 2),
                    "exact_sweep_s": round(t_exact, 2),
                    "largest_exact": [
                        sites[i].name for i in exact.abs().topk(min(5, len(sites))).indices.tolist()
                    ],
                    "largest_estimate": [
                        sites[i].name for i in est.abs().topk(min(5, len(sites))).indices.tolist()
                    ],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {
                "n_prompts": args.n_prompts,
                "n_tokens": args.n_tokens,
                "counterfactual": args.counterfactual,
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
