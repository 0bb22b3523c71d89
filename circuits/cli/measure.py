"""``p0-circuits measure``: per-layer attention-sink metrics of one text on one model."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.cli.common import (
    add_bos,
    add_model,
    add_out,
    add_quiet,
    check_model,
    check_range,
    check_text,
    header,
    load_for,
    model_header,
)
from circuits.core.conventions import (
    DEFAULT_EPS,
    MASSIVE_RATIO_THRESHOLD,
)
from circuits.core.errors import UsageError
from circuits.core.outputs import check_out

NAME = "measure"
HELP = (
    "Measure the P0 attention sink of a model on a text: per-layer attention to P0, sink "
    "score and rate, P0/rest residual norms, massive activations; writes sink_metrics.json "
    "figures and a self-contained report.html."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    parser.add_argument(
        "--text",
        type=Path,
        default=None,
        help="UTF-8 text file (default: the text shipped with the package)",
    )
    add_bos(
        parser, "put the model's BOS token at position 0 (default: the model's training regime)"
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="use only the first N tokens (Gu et al. use T = 64)",
    )
    parser.add_argument(
        "--truncate",
        action="store_true",
        help="cut a text longer than the model's context instead of failing",
    )
    parser.add_argument(
        "--eps",
        type=float,
        default=DEFAULT_EPS,
        help="sink-rate threshold on the sink score (default 0.3; Barbero et al. 0.8)",
    )
    parser.add_argument(
        "--massive-ratio",
        type=float,
        default=MASSIVE_RATIO_THRESHOLD,
        help="massive activation: |value| > 100 and >= this x the median |value| (Sun et al.: 1000)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="recorded; the measurement is deterministic"
    )
    add_out(parser)
    add_quiet(parser)


def check(args: argparse.Namespace) -> None:
    """Every check of the flags but ``--out``'s, before any model library is imported (``run``
    makes them, and a sweep makes them for each of its jobs before the first runs)."""
    if not 0.0 < args.eps < 1.0:
        raise UsageError(f"--eps must lie in (0, 1), got {args.eps}")
    check_range("--massive-ratio", args.massive_ratio, 1.0)
    check_range("--seed", args.seed, 0)
    if args.max_tokens is not None:
        check_range("--max-tokens", args.max_tokens, 2)
    check_model(args.model, args.device, args.n_devices)
    check_text(args.text)


def run(args: argparse.Namespace) -> int:
    check(args)
    check_out(args.out, overwrite=args.overwrite)

    from circuits.core.outputs import output_dir
    from circuits.metrics.measure import measure_sinks
    from circuits.prompts import read_text, tokenize_text
    from circuits.viz.files import save_figure
    from circuits.viz.report import write_result_files
    from circuits.viz.sink_figures import layer_profile_figure

    text = read_text(args.text)
    with output_dir(args.out, overwrite=args.overwrite) as out:
        zm, bos = load_for(args)
        tokenized = tokenize_text(
            zm, text, bos=bos, max_tokens=args.max_tokens, truncate=args.truncate
        )
        if tokenized.truncated and not args.quiet:
            print(
                f"p0-circuits: used the first {tokenized.tokens.shape[1]} of "
                f"{tokenized.n_tokens_in_text} tokens"
            )
        report = measure_sinks(
            zm.model,
            tokenized.tokens,
            bos=bos,
            eps=args.eps,
            massive_ratio=args.massive_ratio,
            progress=not args.quiet,
        )
        data = {
            **header(args, "measure", args.seed, zm.name),
            **model_header(zm),
            "n_tokens_in_text": tokenized.n_tokens_in_text,
            "truncated": tokenized.truncated,
            "tokens": zm.str_tokens(tokenized.tokens[0]),
            **report.to_dict(),
        }
        figure = save_figure(layer_profile_figure(data), out / "sink_profile")
        write_result_files(out, "measure", data, zm=zm)
    if not args.quiet:
        _print_summary(data, args.out, [f.name for f in figure] + ["report.html"])
    return 0


def _print_summary(data: dict, out: Path, figures: list[str]) -> None:
    print(f"{data['model']}  bos={data['bos']}  {data['n_tokens']} tokens")
    print(
        f"{'layer':>5} {'attn_to_p0':>10} {'sink':>6} {'rate':>5} {'p0_norm':>10} {'rest':>8} {'ratio':>7}"
    )
    for row in data["layers"]:
        print(
            f"{row['layer']:>5} {row['attn_to_p0']:>10.3f} {row['sink_score']:>6.3f} "
            f"{row['sink_rate']:>5.2f} {row['p0_norm']:>10.1f} {row['rest_norm_median']:>8.1f} "
            f"{row['p0_norm_ratio']:>7.1f}"
        )
    for row in data.get("routing", {}).get("layers", []):  # a mixture-of-experts model
        own = "its own" if row["p0_has_own_expert"] else "shared"
        print(
            f"block {row['layer']}: P0 routed to expert {row['p0_expert']} ({own}: P0 "
            f"{row['p0_chosen_rate']:.0%} of prompts, other tokens {row['others_chosen_rate']:.0%}"
            f"), share {row['p0_expert_share']:.2f}, entropy P0 {row['p0_entropy']:.2f} vs "
            f"{row['others_entropy']:.2f} nats"
        )
    files = sorted(p.name for p in Path(out).iterdir() if p.is_file())
    print(f"wrote {len(files)} files in {out}: {', '.join(files)}")
