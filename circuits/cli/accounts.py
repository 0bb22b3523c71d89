"""``p0-circuits accounts``: the competing accounts of the P0 sink, asked of one model."""

from __future__ import annotations

import argparse
from pathlib import Path

from circuits.cli.common import (
    add_bos,
    add_model,
    add_out,
    add_prompt_set,
    add_quiet,
    check_model,
    check_range,
    check_text,
    header,
    load_for,
    model_header,
)
from circuits.core.errors import UsageError
from circuits.core.outputs import check_out

NAME = "accounts"
HELP = (
    "Test the competing accounts of the P0 sink on a model: a document mask that makes a later "
    "token first (first-ness), repositioned tokens (position), P0's massive dimensions alone, "
    "its key norm against its direction, and its value norm (no-op sinks); writes accounts.json "
    "and accounts.png."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model(parser)
    add_bos(parser, "put the model's BOS token at position 0 (default: its training regime)")
    add_prompt_set(parser)
    parser.add_argument(
        "--segment-start",
        type=int,
        default=None,
        help="the token s made first of its segment / moved (default: n_tokens // 2)",
    )
    parser.add_argument(
        "--counterfactual",
        choices=("shift", "mean", "zero"),
        default=None,
        help="P0's patch for the component and massive-dimension questions (default: shift "
        "without BOS, mean with it: a shifted <bos> keeps its sink)",
    )
    parser.add_argument("--seed", type=int, default=0, help="recorded; the run is deterministic")
    add_out(parser)
    add_quiet(parser)


def check(args: argparse.Namespace) -> None:
    """Every check of the flags but ``--out``'s, before any model library is imported."""
    check_range("--n-prompts", args.n_prompts, 1)
    check_range("--n-tokens", args.n_tokens, 4)
    check_range("--seed", args.seed, 0)
    if args.segment_start is not None and not 2 <= args.segment_start <= args.n_tokens - 2:
        raise UsageError(
            f"--segment-start must be in 2..{args.n_tokens - 2} for --n-tokens "
            f"{args.n_tokens}, got {args.segment_start}"
        )
    check_model(args.model, args.device, args.n_devices)
    check_text(args.text)


def run(args: argparse.Namespace) -> int:
    check(args)
    check_out(args.out, overwrite=args.overwrite)

    from circuits.backend import require_hooked_transformer
    from circuits.circuit.accounts import ask_accounts
    from circuits.core.atomic import write_json
    from circuits.core.manifest import write_manifest
    from circuits.core.outputs import output_dir
    from circuits.core.records import finite
    from circuits.prompts import prompt_set, read_text
    from circuits.viz.accounts_figure import accounts_figure
    from circuits.viz.files import save_figure

    require_hooked_transformer("p0-circuits accounts (document masks, repositioned tokens)")
    text = read_text(args.text)
    with output_dir(args.out, overwrite=args.overwrite) as out:
        zm, bos = load_for(args)
        tokens = prompt_set(
            zm, n_prompts=args.n_prompts, n_tokens=args.n_tokens, bos=bos, text=text
        )
        found = ask_accounts(
            zm.model,
            tokens,
            model_name=zm.name,
            bos=bos,
            segment_start=args.segment_start,
            counterfactual=args.counterfactual,
        )
        data = {
            "format": "p0-circuits/accounts/1",
            **header(args, "accounts", args.seed, zm.name),
            **model_header(zm),
            **found.to_json(),
        }
        write_json(out / "accounts.json", finite(data))
        save_figure(accounts_figure(data), out / "accounts")
        write_manifest(out)
    if not args.quiet:
        _print_summary(data, args.out)
    return 0


def _print_summary(data: dict, out: Path) -> None:
    pos, s = data["positions"], data["segment_start"]
    print(f"{data['model']}  bos={data['bos']}  s={s}")
    print(
        f"sink score: P0 {pos['p0_sink']:.3f}, P0 at position {s} {pos['p0_at_position_s']:.3f}; "
        f"token {s}: plain {pos['token_s_plain']:.3f}, first of a segment "
        f"{pos['token_s_first_of_segment']:.3f}, at position 0 {pos['token_s_at_position_0']:.3f}"
    )
    m = data["massive_dims"]
    if m.get("dims"):
        print(
            f"massive dims {m['dims']} before block {m['layer']}: alone "
            f"{m['dims_only_effect']:+.3f}, all but them {m['all_but_dims_effect']:+.3f}, "
            f"whole residual {m['whole_residual_effect']:+.3f} (relative to the clean sink)"
        )
    print(f"wrote accounts.json and accounts.png/svg in {out}")
