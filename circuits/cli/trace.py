"""``p0-circuits trace``: the emergence trace of a training run (metrics per checkpoint, phases)."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.cli.common import check_range, header
from circuits.core.conventions import RUN_FILE, TRACE_FILE
from circuits.core.errors import UsageError
from circuits.emergence.phases import PhaseCriteria

FIGURE_FILE = "trace.png"

NAME = "trace"
HELP = (
    "Trace how the P0 sink forms over a training run: per checkpoint and layer attention to "
    "P0, sink score and P0 norm ratio, sink position, concentration in layers 0-1, phases; "
    "writes trace.json and trace.png."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = PhaseCriteria()
    parser.add_argument("run_dir", type=Path, help="a directory written by `p0-circuits train`")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default RUN_DIR)")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="evaluation sequences (default 32)"
    )
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
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def run(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        raise UsageError(
            f"{args.run_dir} is not a directory; pass a run made by `p0-circuits train`"
        )
    check_range("--eps", args.eps, 1e-9, 1 - 1e-9)
    check_range("--delta", args.delta, 0, 1)
    for flag, value in (
        ("--min-stable", args.min_stable),
        ("--batch-size", args.batch_size),
        ("--first-k", args.first_k),
        ("--threads", args.threads or 1),
    ):
        check_range(flag, value, 1)
    if not (args.run_dir / RUN_FILE).is_file():
        raise UsageError(
            f"{args.run_dir} is not a training run (no {RUN_FILE}); train one with `p0-circuits train`"
        )

    import torch

    from circuits.core.atomic import prepare_out_dir, write_json
    from circuits.emergence.trace import trace_run
    from circuits.training.checkpoints import read_run
    from circuits.viz.files import save_figure
    from circuits.viz.trace_figure import trace_figure

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    read_run(args.run_dir)  # a bad run directory fails before anything is written
    out = prepare_out_dir(args.out or args.run_dir)
    criteria = PhaseCriteria(eps=args.eps, delta=args.delta, min_stable=args.min_stable)
    trace = trace_run(
        args.run_dir,
        batch_size=args.batch_size,
        first_k=args.first_k,
        criteria=criteria,
        progress=not args.quiet,
    )
    trace = {**header(args, "trace", trace["config"]["seed"], f"run:{args.run_dir.name}"), **trace}
    (figure,) = save_figure(trace_figure(trace), out / FIGURE_FILE.removesuffix(".png"), ("png",))
    write_json(out / TRACE_FILE, trace)
    if not args.quiet:
        s = trace["summary"]
        print(
            f"p0-circuits trace: {len(trace['checkpoints'])} checkpoints, bos={trace['bos']}, "
            f"final phase {s['final_phase']} (starts: {s['phase_start_step']})"
        )
        print(
            "  final sink score per layer: " + " ".join(f"{v:.3f}" for v in s["final_sink_score"])
        )
        print(
            "  final P0 norm ratio per layer: "
            + " ".join(f"{v:.2f}" for v in s["final_p0_norm_ratio"])
        )
        print(
            f"  sink position {s['final_sink_position']}, jump layer {s['final_jump_layer']}, "
            f"layers 0-1 share: norm {s['final_norm_growth_share_l01']}, "
            f"ablation {s['final_ablation_share_l01']}"
        )
        print(f"  wrote {out / TRACE_FILE} and {figure}")
    return 0
