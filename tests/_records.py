"""Comparing result records number by number (for the regeneration test and by hand:
``python tests/_records.py OLD.json NEW.json``)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import Any

IGNORED = {"provenance", "versions", "command_line", "args", "timings_s", "command", "config"}
"""Keys that describe how a record was made, not what it measured."""


def numbers(record: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a record, keyed by its path (``layers[3].attn_to_p0``)."""
    if isinstance(record, bool) or record is None or isinstance(record, str):
        return
    if isinstance(record, (int, float)):
        yield path, float(record)
    elif isinstance(record, dict):
        for key, value in record.items():
            if key not in IGNORED:
                yield from numbers(value, f"{path}.{key}" if path else str(key))
    elif isinstance(record, list):
        for i, value in enumerate(record):
            yield from numbers(value, f"{path}[{i}]")


def compare(old: Any, new: Any) -> tuple[int, float, list[str], list[str]]:
    """(numbers compared, largest scaled difference |a - b| / max(1, |a|), paths only in old,
    paths only in new). The scale keeps float32 rounding of large norms (~2e4) comparable with
    that of attention weights (<= 1)."""
    a, b = dict(numbers(old)), dict(numbers(new))
    common = a.keys() & b.keys()
    worst = max(
        (abs(a[k] - b[k]) / max(1.0, abs(a[k])) for k in common if math.isfinite(a[k])),
        default=0.0,
    )
    return len(common), worst, sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())


if __name__ == "__main__":
    n, worst, only_old, only_new = compare(
        json.loads(open(sys.argv[1]).read()), json.loads(open(sys.argv[2]).read())
    )
    print(
        f"{n} numbers compared, max |diff| / max(1, |old|) {worst:.3g}; only in old: {len(only_old)}, only in new: {len(only_new)}"
    )
    for p in only_old[:10]:
        print("  old only:", p)
    for p in only_new[:10]:
        print("  new only:", p)
