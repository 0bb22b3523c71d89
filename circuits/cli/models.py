"""``p0-circuits models``: list the zoo."""

from __future__ import annotations

import argparse
import json

from circuits.zoo.pins import VERIFIED_FAMILIES, list_zoo

NAME = "models"
HELP = "List the model zoo: source, size, BOS regime and whether each model is cached."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = list_zoo()
    if args.json:
        print(
            json.dumps({"zoo": rows, "verified_local_families": list(VERIFIED_FAMILIES)}, indent=2)
        )
        return 0
    columns = [
        ("name", "name"),
        ("model", "description"),
        ("size", "size"),
        ("cached", "cached"),
        ("BOS regime", "bos_regime"),
        ("source", "source"),
    ]
    table = [
        {
            **row,
            "size": f"{row['size_mb']:.0f} MB" if row["size_mb"] else "-",
            "cached": "yes" if row["cached"] else "no",
        }
        for row in rows
    ]
    widths = [max(len(title), *(len(str(r[key])) for r in table)) for title, key in columns]
    print("  ".join(title.ljust(w) for (title, _), w in zip(columns, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in table:
        print(
            "  ".join(
                str(r[key]).ljust(w) for (_, key), w in zip(columns, widths, strict=True)
            ).rstrip()
        )
    print(
        "\nAlso accepted: a local .gguf file (llama or gemma3), a training run folder, a "
        "TransformerLens official model name (needs the Hugging Face hub), and a local Hugging "
        "Face model folder of any family TransformerLens converts; tested against transformers: "
        + ", ".join(VERIFIED_FAMILIES)
        + "."
    )
    return 0
