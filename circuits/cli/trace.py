"""``p0-circuits trace``: the emergence trace of a checkpoint series (metrics per checkpoint,
phases), and with ``--circuit`` the P0 Sink Circuit discovered at every checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.cli.common import add_dtype, check_range, counterfactual_spec, header
from circuits.core.conventions import RUN_FILE, TRACE_BATCH_SIZE, TRACE_FILE
from circuits.core.errors import UsageError
from circuits.emergence.phases import PhaseCriteria

FIGURE_FILE = "trace.png"
CIRCUIT_FILE = "circuit_over_training.json"
CIRCUIT_FIGURE = "circuit_over_training.png"

NAME = "trace"
HELP = (
    "Trace how the P0 sink forms over training: per checkpoint and layer attention to P0, sink "
    "score, P0 norm ratio, where attention goes instead, sink position, concentration in layers "
    "0-1, phases; writes trace.json and trace.png (with --circuit also the circuit discovered "
    "at every checkpoint). SOURCE is a `p0-circuits train` run or a folder of Hugging Face "
    "checkpoints; --official NAME a TransformerLens model with training checkpoints."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_source_arguments(parser)
    _add_phase_arguments(parser)
    _add_circuit_arguments(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_dtype(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        type=Path,
        nargs="?",
        help="a run written by `p0-circuits train`, or a folder of Hugging Face checkpoint "
        "subfolders named by step (step1000/, checkpoint-2000/...)",
    )
    parser.add_argument(
        "--official",
        default=None,
        metavar="NAME",
        help="a TransformerLens official model with training checkpoints, e.g. pythia-70m "
        "(needs the Hugging Face hub)",
    )
    parser.add_argument(
        "--checkpoints",
        type=int,
        default=20,
        help="--official: log-spaced checkpoints to trace (default 20)",
    )
    parser.add_argument(
        "--checkpoint-indices",
        default=None,
        help="--official: exact checkpoint indices, e.g. '0,10,50,153'",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: the run itself)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=TRACE_BATCH_SIZE,
        help="evaluation sequences (default 32; for HF/official series: prompts)",
    )
    parser.add_argument(
        "--n-tokens",
        type=int,
        default=64,
        help="HF/official series: tokens per prompt (default 64)",
    )
    parser.add_argument(
        "--bos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="HF/official series: prepend the BOS token to every prompt (default: as the "
        "model's tokenizer does); a run uses the BOS setting it was trained with",
    )


def _add_phase_arguments(parser: argparse.ArgumentParser) -> None:
    d = PhaseCriteria()
    parser.add_argument(
        "--first-k", type=int, default=4, help="key positions competing for the sink (default 4)"
    )
    parser.add_argument(
        "--eps",
        type=float,
        default=d.eps,
        help=f"sink threshold on the sink score (default {d.eps})",
    )
    parser.add_argument(
        "--delta",
        type=float,
        default=d.delta,
        help=f"stable phase: max |S(t) - S(final)| (default {d.delta})",
    )
    parser.add_argument(
        "--min-stable",
        type=int,
        default=d.min_stable,
        help=f"checkpoints a stable phase must span (default {d.min_stable})",
    )


def _add_circuit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--circuit",
        action="store_true",
        help=f"also run discover at every checkpoint: {CIRCUIT_FILE} and {CIRCUIT_FIGURE}",
    )
    parser.add_argument(
        "--circuit-prompts",
        type=int,
        default=8,
        help="--circuit: prompts per discovery (default 8)",
    )
    parser.add_argument(
        "--counterfactual",
        type=counterfactual_spec,
        metavar="SPEC",
        default="mean",
        help="--circuit: what a patched P0 component takes (default mean: the mean over "
        "positions, which also removes what P0's token and position alone say; shift keeps "
        "P0's token and asks only whether being first matters)",
    )


def _indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(
            f"--checkpoint-indices must be integers like '0,10,50', got {text!r}"
        ) from None


def _check(args: argparse.Namespace) -> str:
    """The kind of series ('run', 'hf', 'official'), after every flag is checked."""
    check_range("--eps", args.eps, 1e-9, 1 - 1e-9)
    check_range("--delta", args.delta, 0, 1)
    for flag, value in (
        ("--min-stable", args.min_stable),
        ("--batch-size", args.batch_size),
        ("--first-k", args.first_k),
        ("--threads", args.threads or 1),
        ("--checkpoints", args.checkpoints),
        ("--circuit-prompts", args.circuit_prompts),
    ):
        check_range(flag, value, 1)
    check_range("--n-tokens", args.n_tokens, 2)
    _indices(args.checkpoint_indices)
    if args.official is not None:
        if args.source is not None:
            raise UsageError("give either SOURCE or --official NAME, not both")
        if args.out is None:
            raise UsageError("--official needs --out DIR (where trace.json goes)")
        return "official"
    if args.source is None:
        raise UsageError("give a run or checkpoint folder (SOURCE) or --official NAME")
    if not args.source.is_dir():
        raise UsageError(
            f"{args.source} is not a directory; pass a run made by `p0-circuits train` or a "
            "folder of Hugging Face checkpoints"
        )
    if (args.source / RUN_FILE).is_file():
        if args.bos is not None:
            raise UsageError(
                "--bos/--no-bos applies to HF and official series; a run is traced with the BOS "
                "setting it was trained with"
            )
        return "run"
    if not any((p / "config.json").is_file() for p in args.source.iterdir()):
        raise UsageError(
            f"{args.source} is neither a training run (no {RUN_FILE}) nor a folder of Hugging "
            "Face checkpoints (no subfolder with a config.json); train one with `p0-circuits train`"
        )
    if args.out is None:
        raise UsageError(
            "a folder of Hugging Face checkpoints needs --out DIR (where trace.json goes)"
        )
    return "hf"


def _series(args: argparse.Namespace, kind: str):
    from circuits.emergence import series as S

    if kind == "run":
        from circuits.training.checkpoints import read_run

        read_run(args.source)  # a bad run directory fails before anything is written
        return S.run_series(args.source, batch_size=args.batch_size)
    if kind == "hf":
        return S.hf_folder_series(
            args.source, n_prompts=args.batch_size, n_tokens=args.n_tokens, bos=args.bos
        )
    return S.official_series(
        args.official,
        n_checkpoints=args.checkpoints,
        indices=_indices(args.checkpoint_indices),
        n_prompts=args.batch_size,
        n_tokens=args.n_tokens,
        bos=args.bos,
    )


def run(args: argparse.Namespace) -> int:
    kind = _check(args)

    import torch

    from circuits.core.atomic import prepare_out_dir, write_json
    from circuits.emergence.trace import trace_series, train_losses
    from circuits.viz.files import save_figure
    from circuits.viz.trace_figure import trace_figure

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from circuits.emergence.series import in_dtype

    series = in_dtype(_series(args, kind), args.dtype)
    out = prepare_out_dir(args.out or args.source)
    criteria = PhaseCriteria(eps=args.eps, delta=args.delta, min_stable=args.min_stable)
    trace = trace_series(
        series,
        first_k=args.first_k,
        criteria=criteria,
        progress=not args.quiet,
        train_loss=train_losses(args.source) if kind == "run" else None,
    )
    if kind == "run":
        trace = {"run": str(args.source), **trace}
    seed = (trace.get("config") or {}).get("seed")
    label = f"run:{args.source.name}" if kind == "run" else series.source
    trace = {**header(args, "trace", seed, label), **trace}
    (figure,) = save_figure(trace_figure(trace), out / FIGURE_FILE.removesuffix(".png"), ("png",))
    write_json(out / TRACE_FILE, trace)
    written = [out / TRACE_FILE, figure] + _moe_figures(trace, out)
    if kind == "run":
        written += _monitor_figure(args.source, out)
    if args.circuit:
        written += _circuit(args, series, out, seed, label)
    if not args.quiet:
        _print_summary(trace, written)
    return 0


def _monitor_figure(run: Path, out: Path) -> list[Path]:
    """A run trained with ``--monitor-every``: its live signal beside the loss (monitor.png)."""
    from circuits.emergence.monitor import MONITOR_FILE, read_monitor
    from circuits.viz.files import save_figure
    from circuits.viz.monitor_figure import convergence_figure

    if not (run / MONITOR_FILE).is_file():
        return []
    rows = read_monitor(run / MONITOR_FILE)
    fig = convergence_figure(rows, title=f"{run.name}: live P0 sink monitor beside the loss")
    return list(save_figure(fig, out / "monitor", ("png",)))


def _moe_figures(trace: dict, out: Path) -> list[Path]:
    """A mixture-of-experts run's routing and expert effects over training (none if dense)."""
    from circuits.viz.files import save_figure
    from circuits.viz.moe_figures import experts_over_training_figure, routing_over_training_figure

    if not any(c.get("routing") for c in trace["checkpoints"]):
        return []
    written = []
    for draw, name in (
        (routing_over_training_figure, "routing_over_training"),
        (experts_over_training_figure, "experts_over_training"),
    ):
        written += save_figure(draw(trace), out / name, ("png",))
    return written


def _circuit(args: argparse.Namespace, series, out: Path, seed, label: str) -> list[Path]:
    from circuits.circuit.config import DiscoverConfig
    from circuits.core.atomic import write_json
    from circuits.emergence.circuit_over_training import circuit_over_training
    from circuits.viz.circuit_over_training_figure import circuit_over_training_figure
    from circuits.viz.files import save_figure

    config = DiscoverConfig(counterfactual=args.counterfactual, exact_top_k=None, progress=False)
    data = circuit_over_training(
        series, n_prompts=args.circuit_prompts, config=config, eps=args.eps, progress=not args.quiet
    )
    data = {**header(args, "trace --circuit", seed, label), **data}
    (figure,) = save_figure(
        circuit_over_training_figure(data), out / CIRCUIT_FIGURE.removesuffix(".png"), ("png",)
    )
    write_json(out / CIRCUIT_FILE, data)
    return [out / CIRCUIT_FILE, figure]


def _print_summary(trace: dict, written: list[Path]) -> None:
    s = trace["summary"]
    print(
        f"p0-circuits trace: {len(trace['checkpoints'])} checkpoints, bos={trace['bos']}, "
        f"final phase {s['final_phase']} (starts: {s['phase_start_step']})"
    )
    print("  final sink score per layer: " + " ".join(f"{v:.3f}" for v in s["final_sink_score"]))
    print(
        "  final P0 norm ratio per layer: " + " ".join(f"{v:.2f}" for v in s["final_p0_norm_ratio"])
    )
    print(
        f"  sink position {s['final_sink_position']}, jump layer {s['final_jump_layer']}, "
        f"layers 0-1 share: norm {s['final_norm_growth_share_l01']}, "
        f"ablation {s['final_ablation_share_l01']}"
    )
    print("  wrote " + ", ".join(str(p) for p in written))
