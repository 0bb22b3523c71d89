"""``p0-circuits discover``: find the P0 Sink Circuit by patching, as a graph with a verdict."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from circuits.circuit.config import FIRST_PASSES, DiscoverConfig
from circuits.cli.common import (
    COUNTERFACTUAL_HELP,
    add_bos,
    add_model,
    add_out,
    add_prompt_set,
    add_quiet,
    check_model,
    check_range,
    check_text,
    counterfactual_spec,
    header,
    load_for,
    model_header,
    readout_spec,
)
from circuits.core.conventions import DISCOVER_READOUTS
from circuits.core.errors import UsageError
from circuits.core.outputs import check_out

NAME = "discover"
HELP = (
    "Find the P0 Sink Circuit: patch P0's components (component sweep, head sweep, path "
    "patching), measure the sink of later layers, and write circuit.json, circuit.graphml, "
    "circuit.dot, patching.json, figures and report.html."
)
D = DiscoverConfig()


def _add_first_pass_arguments(parser: argparse.ArgumentParser) -> None:
    """Which components are patched exactly, and the estimate that ranks the rest."""
    parser.add_argument(
        "--exact-top-k",
        type=int,
        default=-1,
        help="-1 (default): exact patching of every component; K: exact patching for the "
        "embedding, the blocks up to --first-receiver and the K other components ranked "
        "highest by the first-pass estimate (--first-pass)",
    )
    parser.add_argument(
        "--first-pass",
        choices=FIRST_PASSES,
        default=D.first_pass,
        help="the estimate that ranks components for --exact-top-k and is reported against the "
        "exact effects: p0-stream (default; exact on P0's keys, other positions clean) or "
        "attribution (attribution patching; --ig-steps)",
    )
    parser.add_argument(
        "--ig-steps",
        type=int,
        default=D.ig_steps,
        help="with --first-pass attribution: 1 (default) the gradient at the clean run; K "
        "integrated gradients along the clean -> counterfactual path in K steps",
    )


def _add_question_arguments(parser: argparse.ArgumentParser) -> None:
    """What is patched into P0, and what the circuit is for."""
    parser.add_argument(
        "--counterfactual",
        type=counterfactual_spec,
        default=D.counterfactual,
        metavar="SPEC",
        help="value patched into P0 (default shift: the first token one place later). "
        + COUNTERFACTUAL_HELP,
    )
    parser.add_argument(
        "--readout",
        type=readout_spec,
        default=D.readout,
        metavar="SPEC",
        help="what the circuit is for (default sink): "
        + "; ".join(f"{k}: {v}" for k, v in DISCOVER_READOUTS.items())
        + ". Effects are shares of (clean - reference): 0 for the sink, every P0 component "
        "patched for the others",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    add_out(parser)
    _add_question_arguments(parser)
    add_bos(parser, "BOS at position 0 (default: the model's training regime)")
    add_prompt_set(parser)
    parser.add_argument(
        "--receivers",
        type=str,
        default=None,
        help="receiver layers of the sink metric, e.g. '2,3,4' (default: --first-receiver .. last)",
    )
    parser.add_argument(
        "--first-receiver",
        type=int,
        default=D.first_receiver,
        help="first receiver layer when --receivers is not given (default 2: Gu et al.'s Sink[2:]; "
        "1 on a 2-layer model)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=D.component_threshold,
        help="|sink change| / clean sink needed to select a component or head (default 0.05)",
    )
    parser.add_argument(
        "--edge-threshold",
        type=float,
        default=D.edge_threshold,
        help="|sink change| / clean sink needed to draw a path (default 0.02)",
    )
    _add_first_pass_arguments(parser)
    parser.add_argument(
        "--sufficiency",
        type=float,
        default=D.sufficiency,
        help="kept fraction of the sink at which the backup search stops (default 0.8)",
    )
    parser.add_argument(
        "--max-backups",
        type=int,
        default=D.max_backups,
        help="most backup nodes the sufficiency search may add (default 3; 0: no search)",
    )
    parser.add_argument(
        "--curve-random",
        type=int,
        default=D.curve_random_rankings,
        help="seeded random rankings the faithfulness curve measures as its control (default 2; "
        "-1: no curve)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=D.max_rows,
        help="largest stacked batch per forward (patches x prompts; default 64)",
    )
    parser.add_argument(
        "--max-memory",
        type=float,
        default=None,
        metavar="GB",
        help="size the stacked batches to stay within GB (replaces --max-rows; see "
        "circuits.patching.memory for the estimate)",
    )
    parser.add_argument("--seed", type=int, default=0, help="recorded; discovery is deterministic")
    add_quiet(parser)


def config_from(args: argparse.Namespace) -> DiscoverConfig:
    """The pipeline's config from the flags, checked (a one-line error for a bad value)."""
    if args.n_tokens < 2:
        raise UsageError(f"--n-tokens (n_tokens) must be at least 2, got {args.n_tokens}")
    if args.n_prompts < 1:
        raise UsageError(f"--n-prompts must be at least 1, got {args.n_prompts}")
    for flag, value, low in (
        ("--exact-top-k", args.exact_top_k, -1),
        ("--ig-steps", args.ig_steps, 1),
        ("--max-rows", args.max_rows, 1),
        ("--first-receiver", args.first_receiver, 1),
        ("--seed", args.seed, 0),
        ("--curve-random", args.curve_random, -1),
        ("--max-memory", args.max_memory, 0.001),
    ):
        if value is not None:
            check_range(flag, value, low)
    receivers = None
    if args.receivers is not None:
        try:
            receivers = [int(x) for x in args.receivers.split(",") if x.strip()]
        except ValueError:
            raise UsageError(
                f"--receivers takes layers like '2,3,4', got {args.receivers!r}"
            ) from None
        if not receivers:
            raise UsageError("--receivers is empty")
    config = DiscoverConfig(
        counterfactual=args.counterfactual,
        readout=args.readout,
        receivers=receivers,
        first_receiver=args.first_receiver,
        component_threshold=args.threshold,
        head_threshold=args.threshold,
        edge_threshold=args.edge_threshold,
        exact_top_k=None if args.exact_top_k < 0 else args.exact_top_k,
        first_pass=args.first_pass,
        ig_steps=args.ig_steps,
        sufficiency=args.sufficiency,
        max_backups=args.max_backups,
        curve=args.curve_random >= 0,
        curve_random_rankings=max(args.curve_random, 0),
        max_rows=args.max_rows,
        progress=not args.quiet,
    )
    config.check()
    return config


def check(args: argparse.Namespace) -> DiscoverConfig:
    """Every check of the flags but ``--out``'s, before any model library is imported (``run``
    makes them, and a sweep makes them for each of its jobs before the first runs); the
    pipeline's config."""
    config = config_from(args)
    check_model(args.model, args.device, args.n_devices)
    check_text(args.text)
    return config


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = check(args)
    check_out(args.out, overwrite=args.overwrite)

    from circuits.circuit.discover import discover
    from circuits.core.outputs import output_dir
    from circuits.prompts import prompt_set, read_text
    from circuits.viz.report import write_result_files

    text = read_text(args.text)
    with output_dir(args.out, overwrite=args.overwrite) as out:
        zm, bos = load_for(args)
        tokens = prompt_set(
            zm, n_prompts=args.n_prompts, n_tokens=args.n_tokens, bos=bos, text=text
        )
        loaded = time.perf_counter()
        if args.max_memory is not None:
            from dataclasses import replace

            from circuits.patching.allocator import bound_memory
            from circuits.patching.memory import rows_within

            rows = rows_within(zm.model, args.n_prompts, args.n_tokens, args.max_memory)
            bound_memory()
            config = replace(config, max_rows=rows)
        found = discover(
            zm.model,
            tokens,
            config,
            model_name=zm.name,
            str_tokens=[zm.str_tokens(row) for row in tokens],
        )
        record = found.result
        record.provenance = header(args, "discover", args.seed, zm.name)
        for key, value in model_header(zm).items():
            setattr(record, key, value)
        record.bos = bos
        record.natural_bos = zm.natural_bos
        timings = dict(record.timings_s or {})
        timings["load_model"] = round(loaded - started, 3)
        timings["total"] = round(time.perf_counter() - started, 3)
        record.timings_s = timings
        found.graph.g.graph.update(bos=bos, seed=args.seed)
        write_result_files(out, "discover", record, graph=found.graph, zm=zm)
    if not args.quiet:
        print(found.verdict)
        print(
            f"faithfulness_kept={found.faithfulness_kept:.3f} faithfulness_ablated={found.faithfulness_ablated:.3f}"
        )
        files = sorted(p.name for p in Path(args.out).iterdir() if p.is_file())
        print(
            f"wrote {len(files)} files in {args.out}: {', '.join(files)}; discovery took "
            f"{timings['total']:.1f}s"
        )
    return 0
