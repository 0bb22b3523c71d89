"""``p0-circuits train``: train a small HookedTransformer from scratch, with resumable checkpoints."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from circuits.cli.common import check_device, header
from circuits.core.conventions import RUN_FILE, TRACE_BATCH_SIZE
from circuits.core.errors import UsageError
from circuits.core.outputs import check_replaceable
from circuits.training.config import DATA_SOURCES, MLPS, NORMS, POSITIONALS, TrainConfig

NAME = "train"
HELP = (
    "Train a small model from scratch (config file and/or flags) with checkpoints at "
    "log-spaced steps; re-running on the same --out resumes from the last checkpoint."
)

# Flags that set a TrainConfig field, by group: (flag, field, type, choices, help); "{default}"
# in the help is the field's default.
CONFIG_FLAGS: dict[str, list[tuple[str, str, type, list[str] | None, str]]] = {
    "model": [
        ("--layers", "n_layers", int, None, "blocks (default {default})"),
        ("--width", "d_model", int, None, "d_model (default {default})"),
        ("--heads", "n_heads", int, None, "attention heads (default {default})"),
        ("--d-mlp", "d_mlp", int, None, "MLP width (default 4 x width)"),
        ("--norm", "norm", str, list(NORMS), "pre-norm (default {default})"),
        (
            "--positional",
            "positional",
            str,
            list(POSITIONALS),
            "positional scheme (default {default})",
        ),
        ("--mlp", "mlp", str, list(MLPS), "MLP (default {default})"),
        (
            "--experts",
            "n_experts",
            int,
            None,
            "mixture-of-experts MLPs with this many experts in every block (default {default}: "
            "dense); each expert is a gated MLP of width --d-mlp",
        ),
        (
            "--experts-per-token",
            "experts_per_token",
            int,
            None,
            "experts each token is routed to (top-k; default {default})",
        ),
        ("--context", "n_ctx", int, None, "tokens per sequence, BOS included (default {default})"),
    ],
    "data": [
        (
            "--data",
            "data",
            str,
            list(DATA_SOURCES),
            "stdlib documentation text with a BPE (default) or a synthetic task",
        ),
        ("--vocab-size", "vocab_size", int, None, "BPE size for stdlib (default {default})"),
    ],
    "optimisation": [
        ("--steps", "steps", int, None, "training steps (default {default})"),
        ("--batch-size", "batch_size", int, None, "sequences per step (default {default})"),
        (
            "--micro-batch-size",
            "micro_batch_size",
            int,
            None,
            "run each step as slices of this many sequences (gradient accumulation)",
        ),
        ("--lr", "lr", float, None, "peak AdamW learning rate (default {default})"),
        ("--warmup", "warmup", int, None, "linear warmup steps (default {default})"),
        ("--weight-decay", "weight_decay", float, None, "AdamW weight decay (default {default})"),
        ("--seed", "seed", int, None, "init and data seed (default {default})"),
    ],
    "checkpoints and execution": [
        (
            "--checkpoints",
            "n_checkpoints",
            int,
            None,
            "log-spaced checkpoints besides step 0 (default {default})",
        ),
        (
            "--save-every",
            "save_every",
            int,
            None,
            "also save the resumable state every N steps (default {default}; 0: off)",
        ),
    ],
}


def _add_monitor_arguments(parser: argparse.ArgumentParser) -> None:
    """The live P0 sink monitor of the run (``circuits.emergence.monitor``)."""
    monitor = parser.add_argument_group("live P0 sink monitor (circuits.emergence.monitor)")
    monitor.add_argument(
        "--monitor-every",
        type=int,
        default=0,
        metavar="N",
        help="measure the P0 sink signal of the model being trained every N steps, on the "
        "batch trace uses, into RUN/monitor.jsonl (default 0: off)",
    )
    monitor.add_argument(
        "--monitor-exact-every",
        type=int,
        default=10,
        metavar="K",
        help="every K-th monitor evaluation also patches exactly (trace's ablation share; "
        "default 10)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON or TOML file of TrainConfig keys; flags given override it",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="run directory (an existing run there is resumed)"
    )
    groups = {}
    for title, flags in CONFIG_FLAGS.items():
        groups[title] = g = parser.add_argument_group(title)
        for flag, field, kind, choices, text in flags:
            g.add_argument(
                flag,
                dest=field,
                type=kind,
                choices=choices,
                default=None,
                help=text.format(default=getattr(defaults, field)),
            )
    data = groups["data"]
    bos = data.add_mutually_exclusive_group()
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
    data.add_argument(
        "--zero-p0-embedding",
        dest="zero_p0_embedding",
        action="store_true",
        default=None,
        help="zero the token embedding at position 0 (a content-free first token without BOS)",
    )
    data.add_argument(
        "--task",
        default=None,
        metavar="JSON",
        help="synthetic task options as JSON, e.g. '{\"n_plain\": 256}'",
    )
    run_group = groups["checkpoints and execution"]
    run_group.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    run_group.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    run_group.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this step as if killed (the run resumes on the next call)",
    )
    run_group.add_argument(
        "--overwrite", action="store_true", help="delete the run in --out and start it again"
    )
    run_group.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_monitor_arguments(parser)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- the saved run (resume) or --config <- explicit flags."""
    saved = args.out / RUN_FILE
    if args.config is not None:
        config = TrainConfig.from_file(args.config)
    elif saved.exists() and not args.overwrite:
        from circuits.training.checkpoints import read_run

        config, _ = read_run(args.out)
    else:
        config = TrainConfig()
    fields = [field for flags in CONFIG_FLAGS.values() for _, field, *_ in flags]
    fields += ["bos", "zero_p0_embedding"]
    overrides = {
        field: getattr(args, field) for field in fields if getattr(args, field) is not None
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


def check_run_overwrite(out: Path) -> None:
    """``--overwrite`` deletes ``out``: refused unless it is a training run (or empty), and
    never the current directory, a folder that holds it, the root or the home directory."""
    check_replaceable(out)
    if out.is_dir() and any(out.iterdir()) and not (out / RUN_FILE).is_file():
        raise UsageError(
            f"--out {out} is not a training run (it has no {RUN_FILE}) and --overwrite would "
            f"delete it; choose another --out, or remove {out} yourself"
        )


def run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    check_device(args.device)
    config = resolve_config(args)
    if args.stop_at is not None and args.stop_at < 0:
        raise UsageError("--stop-at must be >= 0")
    if args.overwrite:
        check_run_overwrite(args.out)
    if args.monitor_every < 0 or args.monitor_exact_every < 1:
        raise UsageError(
            "--monitor-every must be >= 0 (0: off) and --monitor-exact-every >= 1, got "
            f"{args.monitor_every} and {args.monitor_exact_every}"
        )

    import torch

    from circuits.core.atomic import prepare_out_dir
    from circuits.training.checkpoints import device_of
    from circuits.training.loop import train

    device_of(args.device)  # a GPU torch cannot see fails before the run folder exists
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = prepare_out_dir(args.out)
    prov = header(args, "train", config.seed, f"run:{out.name}")
    monitor = None
    if args.monitor_every:
        from circuits.emergence.monitor import MONITOR_FILE, P0SinkMonitor
        from circuits.training.data import DataSource

        monitor = P0SinkMonitor(
            DataSource(config).eval_batch(TRACE_BATCH_SIZE).to(device_of(args.device)),
            every=args.monitor_every,
            path=out / MONITOR_FILE,
            bos=config.bos,
            exact_every=args.monitor_exact_every,
        )
    result = train(
        config,
        out,
        device=args.device,
        progress=not args.quiet,
        stop_at=args.stop_at,
        provenance=prov,
        overwrite=args.overwrite,
        monitor=monitor,
    )
    if not args.quiet:
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
        last = result.losses[-1][1] if result.losses else float("nan")
        print(
            f"p0-circuits train: {out} at step {result.step}/{config.steps}{resumed}, "
            f"last loss {last:.3f}; trace it with `p0-circuits trace {out}`"
        )
    return 0
