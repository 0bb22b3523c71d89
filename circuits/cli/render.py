"""``p0-circuits render DIR``: rebuild ``report.html`` (and its figures) from saved JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.cli.common import check_model
from circuits.core.errors import UnknownModelError, UsageError
from circuits.core.records import result_kind

NAME = "render"
HELP = (
    "Rebuild DIR/report.html, one self-contained page (figures, tables, circuitsvis views), "
    "from the JSON a measure or discover run saved in DIR, without rerunning the model; "
    "a DIR of measure runs (e.g. bos/ and no-bos/) gives them side by side."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir",
        type=Path,
        metavar="DIR",
        help="a directory written by measure or discover, or one holding such runs",
    )
    parser.add_argument(
        "--views",
        action="store_true",
        help="first compute views.json (attention patterns of the sink heads, "
        "per-token norms): loads the model named in the JSON, one forward pass",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="with --views: load this model instead of the one named in the JSON",
    )
    parser.add_argument(
        "--top-k", type=int, default=6, help="with --views: sink heads shown (default 6)"
    )
    parser.add_argument(
        "--view-tokens",
        type=int,
        default=32,
        help="with --views: tokens of the first prompt shown (default 32)",
    )
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="only write report.html (figures are embedded in it anyway)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    kind = result_kind(args.dir)
    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.view_tokens < 2:
        raise UsageError(f"--view-tokens must be at least 2, got {args.view_tokens}")
    if args.views and kind == "compare":
        raise UsageError(f"{args.dir} holds several runs; use --views on each sub-directory")
    if args.views and args.model is not None:
        check_model(args.model)

    from circuits.viz.report import build_report

    zm = None
    if args.views:
        from circuits.zoo.load import load_model

        zm = load_model(args.model or _loadable_model_of(args.dir), progress=not args.quiet)
    path = build_report(
        args.dir,
        zm=zm,
        write_figures=not args.no_figures,
        top_k=args.top_k,
        view_tokens=args.view_tokens,
    )
    if not args.quiet:
        print(f"wrote {path} ({kind}, {path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _loadable_model_of(folder) -> str:
    """The model named in ``folder``'s record, refused with the fix when it cannot be loaded by
    name (a model built in Python, say)."""
    from circuits.viz.report import model_name_of

    name = model_name_of(folder)
    try:
        check_model(name)
    except UnknownModelError:
        raise UsageError(
            f"{folder} was made by model '{name}', which cannot be loaded by name (a model "
            "built in Python?): pass --model NAME|PATH, or add the views from Python with "
            "circuits.viz.build_report(DIR, zm=model)"
        ) from None
    return name
