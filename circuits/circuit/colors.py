"""The toolkit's colours, defined once for figures, the panel and the graph exports.

**Effects** are "patched minus clean": negative when the patch *lowers* the sink. Everywhere,
**blue means the patch lowers the sink** (the patched component carries it) and red means it
raises it: ``EFFECT_CMAP`` (``RdBu_r``: low values blue, high values red) for fills on a
symmetric scale, ``LOWERS`` / ``RAISES`` for lines and edges.

**Node kinds** (``KIND_COLORS``) mark what a node *is* (embedding, attention, MLP, a receiver's
K/Q/V input) where the fill is not an effect, e.g. the scatter of the first pass.
"""

from __future__ import annotations

import math

EFFECT_CMAP = "RdBu_r"
"""Diverging colour map for effects: blue = the patch lowers the sink, red = raises it."""
LOWERS = "#2166ac"
RAISES = "#b2182b"
KIND_COLORS = {
    "embed": "#9e9e9e",
    "attn": "#1f77b4",
    "head": "#6baed6",
    "mlp": "#d62728",
    "expert": "#fc9272",
    "resid_pre": "#bdbdbd",
    "resid_mid": "#bdbdbd",
    "resid_post": "#bdbdbd",
    "q": "#2ca02c",
    "k": "#ff7f0e",
    "v": "#9467bd",
    "mlp_in": "#e377c2",
}
"""One colour per node kind."""


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
