"""``p0-circuits train``: train a small HookedTransformer from scratch, with resumable checkpoints."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from circuits.errors import UsageError
from circuits.io import prepare_out_dir, provenance
from circuits.training import RUN_FILE, TrainConfig, train

NAME = "train"
HELP = (
    "Train a small model from scratch (config file and/or flags) with checkpoints at "
    "log-spaced steps; re-running on the same --out resumes from the last checkpoint."
)

# flag -> TrainConfig field
FLAGS = {
    "layers": "n_layers",
    "width": "d_model",
    "heads": "n_heads",
    "d_mlp": "d_mlp",
    "norm": "norm",
    "positional": "positional",
    "mlp": "mlp",
    "context": "n_ctx",
    "bos": "bos",
    "data": "data",
    "vocab_size": "vocab_size",
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "warmup": "warmup",
    "weight_decay": "weight_decay",
    "seed": "seed",
    "checkpoints": "n_checkpoints",
    "save_every": "save_every",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON or TOML file of TrainConfig keys; flags given override it",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="run directory (an existing run there is resumed)"
    )
    g = parser.add_argument_group("model")
    g.add_argument("--layers", type=int, default=None, help=f"blocks (default {d.n_layers})")
    g.add_argument("--width", type=int, default=None, help=f"d_model (default {d.d_model})")
    g.add_argument("--heads", type=int, default=None, help=f"attention heads (default {d.n_heads})")
    g.add_argument("--d-mlp", type=int, default=None, help="MLP width (default 4 x width)")
    g.add_argument(
        "--norm", choices=["rms", "ln"], default=None, help=f"pre-norm (default {d.norm})"
    )
    g.add_argument(
        "--positional",
        choices=["rotary", "learned"],
        default=None,
        help=f"positional scheme (default {d.positional})",
    )
    g.add_argument(
        "--mlp", choices=["gelu", "gated-silu"], default=None, help=f"MLP (default {d.mlp})"
    )
    g.add_argument(
        "--context",
        type=int,
        default=None,
        help=f"tokens per sequence, BOS included (default {d.n_ctx})",
    )
    g = parser.add_argument_group("data")
    bos = g.add_mutually_exclusive_group()
    bos.add_argument(
        "--bos",
        dest="bos",
        action="store_true",
        default=None,
        help="put a BOS token at position 0 of every sequence",
    )
    bos.add_argument(
        "--no-bos",
        dest="bos",
        action="store_false",
        help="no BOS: position 0 is an arbitrary token (default)",
    )
    g.add_argument(
        "--data",
        choices=["stdlib", "trigger", "induct"],
        default=None,
        help="stdlib documentation text with a BPE (default) or a synthetic task",
    )
    g.add_argument(
        "--task",
        default=None,
        metavar="JSON",
        help="synthetic task options as JSON, e.g. '{\"n_plain\": 256}'",
    )
    g.add_argument(
        "--vocab-size", type=int, default=None, help=f"BPE size for stdlib (default {d.vocab_size})"
    )
    g = parser.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=None, help=f"training steps (default {d.steps})")
    g.add_argument(
        "--batch-size", type=int, default=None, help=f"sequences per step (default {d.batch_size})"
    )
    g.add_argument(
        "--lr", type=float, default=None, help=f"peak AdamW learning rate (default {d.lr})"
    )
    g.add_argument(
        "--warmup", type=int, default=None, help=f"linear warmup steps (default {d.warmup})"
    )
    g.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help=f"AdamW weight decay (default {d.weight_decay})",
    )
    g.add_argument("--seed", type=int, default=None, help=f"init and data seed (default {d.seed})")
    g = parser.add_argument_group("checkpoints and execution")
    g.add_argument(
        "--checkpoints",
        type=int,
        default=None,
        help=f"log-spaced checkpoints besides step 0 (default {d.n_checkpoints})",
    )
    g.add_argument(
        "--save-every",
        type=int,
        default=None,
        help=f"also save the resumable state every N steps (default {d.save_every}; 0: off)",
    )
    g.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    g.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this step as if killed (the run resumes on the next call)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- the saved run (resume) or --config <- explicit flags."""
    saved = args.out / RUN_FILE
    if args.config is not None:
        config = TrainConfig.from_file(args.config)
    elif saved.exists():
        config = TrainConfig.from_dict(json.loads(saved.read_text())["config"])
    else:
        config = TrainConfig()
    overrides = {
        field: getattr(args, flag)
        for flag, field in FLAGS.items()
        if getattr(args, flag) is not None
    }
    if args.task is not None:
        try:
            overrides["task"] = json.loads(args.task)
        except ValueError as err:
            raise UsageError(f"--task must be a JSON object: {err}") from None
        if not isinstance(overrides["task"], dict):
            raise UsageError("--task must be a JSON object")
    config = replace(config, **overrides)
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.device not in ("cpu", "auto") and not args.device.startswith("cuda"):
        raise UsageError(f"--device must be cpu, cuda[:N] or auto, got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no GPU; use --device cpu")
    config = resolve_config(args)
    if args.stop_at is not None and args.stop_at < 0:
        raise UsageError("--stop-at must be >= 0")
    out = prepare_out_dir(args.out)
    prov = provenance("train", vars(args), config.seed, f"run:{out.name}")
    result = train(
        config,
        out,
        device=args.device,
        progress=not args.quiet,
        stop_at=args.stop_at,
        provenance=prov,
    )
    if not args.quiet:
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
        last = result.losses[-1][1] if result.losses else float("nan")
        print(
            f"p0-circuits train: {out} at step {result.step}/{config.steps}{resumed}, "
            f"last loss {last:.3f}; trace it with `p0-circuits trace {out}`"
        )
    return 0
