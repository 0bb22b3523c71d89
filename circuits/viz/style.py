"""One visual vocabulary for every figure: how effects are coloured, how a heatmap's scale is
chosen, and the colour of each node kind.

**Effects.** An effect is "patched minus clean": negative when the patch *lowers* the sink.
Everywhere -- heatmaps, path figures, graph edges, legends -- **blue means the patch lowers the
sink** (the patched component carries it) and red means it raises it (``EFFECT_CMAP`` is
``RdBu_r``: low values blue, high values red; ``LOWERS`` / ``RAISES`` for lines and edges).

**Scales.** Heatmaps of effects use a symmetric scale around 0 whose limit is robust to a lone
outlier (``effect_limit``): a cell past the limit is drawn at the end of the scale and the
colour bar says so (``extend``), instead of one +246% cell washing out every other.

Figures are ``matplotlib.figure.Figure`` objects built without pyplot: no backend is chosen
here, nothing is written (``circuits.viz.files`` saves), and in Jupyter they display inline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from matplotlib.figure import Figure

from circuits.circuit.export import KIND_COLORS

EFFECT_CMAP = "RdBu_r"
"""Diverging colour map for effects: blue = the patch lowers the sink, red = raises it."""
LOWERS = "#2166ac"
RAISES = "#b2182b"
SINK_CMAP = "viridis"
"""Sequential map for attention to P0 (0..1)."""
ROBUST_QUANTILE = 0.95
ROBUST_FACTOR = 1.5

__all__ = ["EFFECT_CMAP", "KIND_COLORS", "LOWERS", "RAISES", "SINK_CMAP", "effect_color"]


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches (no pyplot, no backend)."""
    return Figure(figsize=(width, height))


def effect_color(effect: float | None) -> str:
    """Line/edge colour of an effect: blue when the patch lowers the sink, red when it raises it."""
    return LOWERS if (effect or 0.0) < 0 else RAISES


def effect_rgb(value: float | None, limit: float) -> str:
    """The effect colour map's colour (hex) for ``value`` on a symmetric scale of ``limit``
    (blue: lowers the sink; grey for None)."""
    if value is None or not math.isfinite(value):
        return "#dddddd"
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    x = 0.5 + 0.5 * max(-1.0, min(1.0, value / (limit or 1.0)))
    return to_hex(colormaps[EFFECT_CMAP](x))


def effect_limit(values: Iterable[float]) -> tuple[float, str]:
    """(limit, extend) of a symmetric colour scale for effects.

    The limit is the largest |value| unless that exceeds ``ROBUST_FACTOR`` x the
    ``ROBUST_QUANTILE`` quantile of |values| (a lone outlier): then it is clipped there and
    ``extend`` tells the colour bar which ends hold clipped cells.
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return 1.0, "neither"
    mags = np.abs(arr)
    top = float(mags.max())
    robust = ROBUST_FACTOR * float(np.quantile(mags, ROBUST_QUANTILE))
    limit = top if top <= robust or robust == 0 else robust
    limit = limit or 1.0
    low, high = bool((arr < -limit).any()), bool((arr > limit).any())
    extend = "both" if low and high else "min" if low else "max" if high else "neither"
    return limit, extend
