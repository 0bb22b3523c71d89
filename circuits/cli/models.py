"""``p0-circuits models``: list the zoo."""

from __future__ import annotations

import argparse
import json

from circuits.zoo.pins import list_zoo

NAME = "models"
HELP = "List the model zoo: source, size, BOS regime and whether each model is cached."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = list_zoo()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<14} {'size':>8}  {'cached':<6}  {'BOS regime':<48}  source"
    print(header)
    print("-" * len(header))
    for row in rows:
        size = f"{row['size_mb']:.0f} MB" if row["size_mb"] else "-"
        cached = "yes" if row["cached"] else "no"
        print(f"{row['name']:<14} {size:>8}  {cached:<6}  {row['bos_regime']:<48}  {row['source']}")
    print(
        "\nAlso accepted: a local .gguf file, a Hugging Face model folder, a training run folder,"
        " or a TransformerLens official model name (needs the Hugging Face hub)."
    )
    return 0
