"""``p0-circuits plan``: what a discovery of a model needs, read from its shape before any load."""

from __future__ import annotations

import argparse
import json

from circuits.cli.common import add_dtype, check_range
from circuits.core.errors import UsageError

NAME = "plan"
HELP = (
    "Size a discovery before loading anything: the model's weights, the engine's caches, "
    "activations per stacked row, rows per forward under the memory budget, peak memory per "
    "card, and the time the FLOP model predicts on this CPU and on a GPU class; a plan that "
    "cannot fit is refused with the smallest one that does."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="a zoo name, a published shape (llama-3.1-8b, qwen3-30b-a3b, ...) or a local "
        "Hugging Face folder (its config.json)",
    )
    add_dtype(parser)
    parser.add_argument("--gpus", type=int, default=0, help="cards (default 0: this CPU)")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="GB per card (default 80)")
    parser.add_argument("--gpu", default="h100", help="GPU class for the time (default h100)")
    parser.add_argument(
        "--memory", type=float, default=24.0, help="with --gpus 0: this machine's GB (default 24)"
    )
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--n-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")


def _gb(n: float) -> str:
    return f"{n / 1024**3:.2f} GB"


def run(args: argparse.Namespace) -> int:
    from circuits.patching.plan import GPU_PEAK_TFLOPS, plan, smallest_fit
    from circuits.zoo.shapes import shape_of

    check_range("--gpus", args.gpus, 0)
    check_range("--gpu-memory", args.gpu_memory, 1)
    check_range("--memory", args.memory, 1)
    check_range("--n-prompts", args.n_prompts, 1)
    check_range("--n-tokens", args.n_tokens, 2)
    if args.gpu not in GPU_PEAK_TFLOPS:
        raise UsageError(f"--gpu {args.gpu!r}: choose one of {', '.join(GPU_PEAK_TFLOPS)}")
    shape = shape_of(args.model)
    card = args.gpu_memory if args.gpus else None
    p = plan(
        shape,
        dtype=args.dtype,
        n_prompts=args.n_prompts,
        n_tokens=args.n_tokens,
        n_cards=max(args.gpus, 1),
        card_gb=card,
        memory_gb=args.memory,
    )
    where = (
        f"{args.gpus} x {args.gpu_memory:g} GB" if args.gpus else f"this CPU ({args.memory:g} GB)"
    )
    if not p.fits:
        fit = smallest_fit(
            shape, card_gb=args.gpu_memory, n_prompts=args.n_prompts, n_tokens=args.n_tokens
        )
        better = (
            f"the smallest plan that fits: --dtype {fit.dtype} --gpus {fit.n_cards} "
            f"--gpu-memory {args.gpu_memory:g} ({_gb(fit.peak_per_card)} per card)"
            if fit
            else f"no plan of up to 8 cards of {args.gpu_memory:g} GB fits"
        )
        raise UsageError(
            f"{shape.name} in {args.dtype} does not fit {where}: it needs "
            f"{_gb(p.peak_per_card)} per card for one patch; {better}"
        )
    out = {
        "model": shape.name,
        "dtype": args.dtype,
        "where": where,
        "params_b": round(shape.n_params / 1e9, 3),
        "active_params_b": round(shape.active_params / 1e9, 3),
        "weights_gb": round(p.weights / 1024**3, 2),
        "caches_gb": round(p.caches / 1024**3, 2),
        "per_row_mb": round(p.per_row / 1024**2, 1),
        "rows_per_forward": p.rows,
        "peak_per_card_gb": round(p.peak_per_card / 1024**3, 2),
        "discover_s_cpu": round(p.cpu_seconds()),
        f"discover_s_{args.gpu}": round(p.gpu_seconds(args.gpu), 1),
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{shape.name}: {out['params_b']} B parameters ({out['active_params_b']} B per token)")
    print(f"  weights in {args.dtype}: {_gb(p.weights)}; engine caches: {_gb(p.caches)}")
    print(f"  activations per stacked row: {p.per_row / 1024**2:.1f} MB")
    print(f"  on {where}: {p.rows} rows per forward, peak {_gb(p.peak_per_card)} per card")
    print(
        f"  discover time (FLOP model): ~{out['discover_s_cpu']} s on this CPU, "
        f"~{out[f'discover_s_{args.gpu}']} s on {max(args.gpus, 1)} x {args.gpu}"
    )
    return 0
