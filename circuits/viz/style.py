"""One visual vocabulary for every figure: how effects are coloured, how a heatmap's scale is
chosen, and the colour of each node kind.

**Effects.** An effect is "patched minus clean": negative when the patch *lowers* the sink.
Everywhere -- heatmaps, path figures, graph edges, legends -- **blue means the patch lowers the
sink** (the patched component carries it) and red means it raises it (``EFFECT_CMAP`` is
``RdBu_r``: low values blue, high values red; ``LOWERS`` / ``RAISES`` for lines and edges). The
convention is defined in ``circuits.circuit.colors`` so the graph exports (DOT) share it.

**Scales.** Heatmaps of effects use a symmetric scale around 0 reaching the largest |effect|,
unless that one cell is a lone outlier (more than ``LONE_OUTLIER_FACTOR`` x the next largest):
then the scale ends at the next largest, the outlier is drawn at its end and the colour bar says
so (``extend``), instead of one +246% cell washing out every other. Cells carry their value as a
percentage of the clean sink (``percent_label``), in white on dark colours (``text_color``).

Figures are ``matplotlib.figure.Figure`` objects built without pyplot: no backend is chosen
here, nothing is written (``circuits.viz.files`` saves), and in Jupyter they display inline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from circuits.circuit.colors import (
    EFFECT_CMAP,
    KIND_COLORS,
    LOWERS,
    RAISES,
    effect_color,
    effect_rgb,
)
from circuits.circuit.record import DiscoveryRecord

SINK_CMAP = "viridis"
"""Sequential map for attention to P0 (0..1)."""
LONE_OUTLIER_FACTOR = 3.0
DARK_CELL = 0.55
"""Cells whose colour is past this fraction of the scale are dark enough for white text."""

__all__ = [
    "EFFECT_CMAP",
    "KIND_COLORS",
    "LOWERS",
    "RAISES",
    "SINK_CMAP",
    "effect_color",
    "effect_rgb",
]


@dataclass(frozen=True)
class EffectWords:
    """How a figure of ``record``'s effects names them: its colour-bar / axis label (``axis``),
    what blue and red mean (``blue``, ``red``) and the readout (``readout``)."""

    readout: str
    axis: str
    blue: str
    red: str


def effect_words(record: DiscoveryRecord) -> EffectWords:
    """The words for the readout the discovery asked (``discover --readout``): for the sink,
    "% of the clean sink"; for another readout, "% of P0's effect" (clean - every P0 component
    patched; ``circuits.circuit.readout_choice``), blue meaning the patch takes the readout
    towards that floor."""
    if record.readout is None or record.readout.spec == "sink":
        return EffectWords(
            "sink",
            "sink change, % of the clean sink",
            "patch lowers the sink",
            "patch raises the sink",
        )
    label = record.readout.label
    return EffectWords(
        label,
        f"{label} change, % of P0's effect\n(clean - all P0 patched)",
        f"patch removes P0's effect on the {label}",
        f"patch adds to P0's effect on the {label}",
    )


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches (no pyplot, no backend)."""
    return Figure(figsize=(width, height))


def integer_ticks(ax, axis: str = "x") -> None:
    """Only whole-number ticks on ``axis`` (layers, steps): a 2-layer model gets 0 and 1, not
    0, 0.5, 1."""
    from matplotlib.ticker import MaxNLocator

    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


def effect_limit(values: Iterable[float]) -> tuple[float, str]:
    """(limit, extend) of a symmetric colour scale for effects.

    The limit is the largest |value| unless that exceeds ``LONE_OUTLIER_FACTOR`` x the second
    largest (a lone outlier): then it is the second largest and ``extend`` tells the colour bar
    which end holds the clipped cell. Several large cells (layer 0's heads) are never clipped.
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return 1.0, "neither"
    mags = np.sort(np.abs(arr))[::-1]
    limit = float(mags[0])
    if arr.size >= 3 and mags[1] > 0 and mags[0] > LONE_OUTLIER_FACTOR * mags[1]:
        limit = float(mags[1])
    limit = limit or 1.0
    low, high = bool((arr < -limit).any()), bool((arr > limit).any())
    extend = "both" if low and high else "min" if low else "max" if high else "neither"
    return limit, extend


def percent_label(fraction: float) -> str:
    """A relative effect as a cell label, in percent of the clean sink without the sign "%"
    (the colour bar names the unit): -0.1312 -> "-13", -0.0042 -> "-0.42", two significant
    figures down to 0.01 and "0" below it."""
    pct = 100.0 * fraction
    mag = abs(pct)
    if mag < 0.005:
        return "0"
    digits = 0 if mag >= 9.5 else 1 if mag >= 0.95 else 2
    return f"{pct:+.{digits}f}"


def text_color(value: float, limit: float) -> str:
    """Black or white, whichever reads on the effect colour of ``value`` at scale ``limit``."""
    return "white" if abs(value) >= DARK_CELL * (limit or 1.0) else "black"
