"""The TransformerLens 4 side of the parity: each reference of ``tests.parity.reference``
rebuilt as a bridge and compared, number by number (``comparisons``), plus the parity table
(``python -m tests.parity.compare REFDIR``, run on TransformerLens 4: the markdown behind
``results/engine/tl4_parity.md``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuits.backend import TL_VERSION
from circuits.backend.build import model_from_tl_weights, native_unsupported
from tests.parity.numbers import FIRST_PASS_KEYS, parity_numbers

ABS_TOL = 1e-5
REL_TOL = 1e-4
"""float32 on both sides, different kernels (the bridge's linear layers vs TransformerLens 3's
einsums): a number agrees when ``|a - b| <= ABS_TOL + REL_TOL * |a|``. The views' numbers are
rounded to 4 digits (``views.json``), so there one rounding step (``ROUNDED_TOL``) may flip."""
ROUNDED_TOL = 1.01e-4


@dataclass
class Comparison:
    """One structure's parity: the largest absolute and relative differences, what disagrees
    beyond the tolerance, and what was not compared (and why)."""

    name: str
    n_numbers: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst: str = ""
    failures: list[str] = field(default_factory=list)
    skipped: str = ""
    refused: str = ""


def compare_numbers(
    ref: dict[str, Any], got: dict[str, Any], name: str, skip: tuple[str, ...] = ()
) -> Comparison:
    """Every number both sides report, within the tolerance; strings equal; the same keys."""
    out = Comparison(name)
    for key in sorted(set(ref) | set(got)):
        if key.startswith(skip):
            continue
        if key not in ref or key not in got:
            out.failures.append(f"{key}: only on {'3.x' if key in ref else '4.x'}")
            continue
        a, b = ref[key], got[key]
        if not (isinstance(a, float) and isinstance(b, float)):
            if a != b:
                out.failures.append(f"{key}: {a!r} vs {b!r}")
            continue
        out.n_numbers += 1
        if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
            if not (a == b or (math.isnan(a) and math.isnan(b))):
                out.failures.append(f"{key}: {a} vs {b}")
            continue
        diff = abs(a - b)
        if diff > out.max_abs:
            out.max_abs, out.worst = diff, key
        if abs(a) > ABS_TOL:
            out.max_rel = max(out.max_rel, diff / abs(a))
        rounding = ROUNDED_TOL if key.startswith("views.") else 0.0
        if diff > ABS_TOL + REL_TOL * abs(a) + rounding:
            out.failures.append(f"{key}: {a!r} vs {b!r} (|diff| {diff:.2e})")
    return out


def compare_reference(path: Path) -> Comparison:
    """One reference file against its bridge: a structure the native model cannot build must
    be refused by name; the default first pass is left out where the bridge ran it exactly."""
    ref = torch.load(path, weights_only=False)
    name = ref["name"]
    if "fields" in ref:
        reasons = native_unsupported(ref["fields"])
        if reasons:
            return Comparison(name, refused="; ".join(reasons))
        model = model_from_tl_weights(ref["fields"], ref["state_dict"])
    else:
        from circuits.zoo.load import load_model

        model = load_model(name).model
    got = parity_numbers(model, ref["tokens"])
    exact_first_pass = got.get("discover.first_pass.kind") != ref["numbers"].get(
        "discover.first_pass.kind"
    )
    skip = FIRST_PASS_KEYS if exact_first_pass else ()
    out = compare_numbers(ref["numbers"], got, name, skip)
    if exact_first_pass:
        out.skipped = (
            f"default first pass: {ref['numbers']['discover.first_pass.kind']} on 3.x, "
            f"{got['discover.first_pass.kind']} on 4.x (compared through the attribution "
            "first pass instead)"
        )
    return out


def references(folder: Path) -> Iterator[Path]:
    yield from sorted(folder.glob("*.pt"))


def table(rows: list[Comparison]) -> str:
    lines = [
        f"| structure | numbers compared | max abs diff | max rel diff | "
        f"on TransformerLens {TL_VERSION} |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r.refused:
            lines.append(f"| {r.name} | - | - | - | refused by name: {r.refused} |")
            continue
        status = "same" if not r.failures else f"{len(r.failures)} differ: {r.failures[0]}"
        if r.skipped:
            status += f"; {r.skipped}"
        lines.append(f"| {r.name} | {r.n_numbers} | {r.max_abs:.1e} | {r.max_rel:.1e} | {status} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("refdir", type=Path)
    args = parser.parse_args()
    print(table([compare_reference(p) for p in references(args.refdir)]), end="")


if __name__ == "__main__":
    main()
