"""The P0 Sink Circuit over training (``circuit_over_training.json``) as one figure."""

from __future__ import annotations

import re
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from circuits.core.errors import MissingDataError
from circuits.viz.style import EFFECT_CMAP, LOWERS, effect_limit


def _component_order(name: str) -> tuple[int, int, int]:
    """embed first, then by layer, attention before MLP, an MLP's experts after it."""
    if name.startswith("embed"):
        return (-1, 0, 0)
    m = re.match(r"(attn|mlp)(\d+)(?:\.e(\d+))?", name)
    if not m:
        return (10**6, 0, 0)
    expert = int(m.group(3)) + 1 if m.group(3) else 0
    return (int(m.group(2)), 0 if m.group(1) == "attn" else 1, expert)


def circuit_over_training_figure(data: dict[str, Any]) -> Figure:
    """Left: components x checkpoints, each cell the exact patching effect at P0 (sink change /
    clean sink; blue: the patch lowers the sink), circuit members outlined. Right: the clean sink
    and the faithfulness of the circuit (kept, ablated, floor) against the step."""
    rows = data.get("checkpoints") or []
    if not rows:
        raise MissingDataError("circuit_over_training.json has no checkpoints")
    names = sorted({n for r in rows for n in r["effects"]}, key=_component_order)
    grid = np.array([[r["effects"].get(n, np.nan) for r in rows] for n in names], dtype=float)
    fig = Figure(figsize=(max(10.0, 4 + 0.45 * len(rows)), 1.6 + 0.35 * len(names) + 2))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    lim, extend = effect_limit(grid.flatten().tolist())
    cmap = matplotlib.colormaps[EFFECT_CMAP].with_extremes(bad="#bdbdbd")
    im = left.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    fig.colorbar(im, ax=left, label="sink change / clean sink", extend=extend)
    for j, r in enumerate(rows):
        for name in r["circuit"]:
            if name in names:
                i = names.index(name)
                left.add_patch(
                    _box(j, i),
                )
    left.set_yticks(range(len(names)), names, fontsize=7)
    left.set_xticks(range(len(rows)), [str(r["step"]) for r in rows], rotation=90, fontsize=6)
    left.set_xlabel("checkpoint (step)")
    left.set_title(
        "exact patching at P0 per checkpoint (outlined: in the circuit; grey: not patched there)",
        fontsize=9,
    )
    steps = [max(r["step"], 0.5) for r in rows]
    for key, label, style in (
        ("kept", "circuit kept", dict(color=LOWERS, marker="o")),
        ("ablated", "circuit ablated", dict(color="#b2182b", marker="s")),
        ("floor", "all P0 components ablated", dict(color="#777777", ls=":", marker=".")),
    ):
        values = [r[key] if r[key] is not None else np.nan for r in rows]
        right.plot(steps, values, label=label, **style)
    right.plot(steps, [r["clean_sink"] for r in rows], color="k", lw=2, label="clean sink score")
    right.axhline(data["discover_config"]["sufficiency"], color=LOWERS, ls="--", lw=0.8)
    right.axhline(data.get("eps", 0.3), color="k", ls=":", lw=0.8)
    right.set_xscale("log")
    right.set_xlabel("step")
    right.set_ylabel("fraction of the clean sink / sink score")
    right.set_title(
        "faithfulness over training (dashed: sufficiency; dotted: sink threshold)", fontsize=9
    )
    right.legend(fontsize=7)
    fig.suptitle(f"P0 Sink Circuit over training: {data.get('source', '')}", fontsize=10)
    fig.tight_layout()
    return fig


def _box(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, lw=1.2, edgecolor="k")
