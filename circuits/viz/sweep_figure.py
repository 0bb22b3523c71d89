"""The figure of a sweep: the circuit's components at each checkpoint (or job) of each model.

One column of panels per (model, counterfactual, command): the top panel is the clean sink
and, for discover jobs, the circuit's kept and ablated sink (fractions of the clean sink) per
checkpoint; the bottom panel has one row per component that enters any of those circuits, one
column per checkpoint, coloured by the component's exact effect (sink change / clean sink; blue:
patching it lowers the sink; grey: not patched exactly there, e.g. a head outside that
checkpoint's head sweep), with a dot where the component is in that checkpoint's circuit.
Rows come from ``circuits.sweep.summary`` (``summary.jsonl``); nothing is written.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from circuits.core.errors import MissingDataError
from circuits.viz.style import EFFECT_CMAP, LOWERS, effect_limit, new_figure

NOT_PATCHED = "#d9d9d9"


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("status") == "done" and row.get("sink") is not None:
            key = (
                str(row["model"]).rsplit("/", 1)[-1],
                str(row.get("counterfactual") or "-"),
                row["command"],
            )
            groups[key].append(row)
    for members in groups.values():
        members.sort(key=lambda r: (r.get("checkpoint") is None, r.get("checkpoint") or 0, r["id"]))
    return dict(groups)


def _x_labels(members: list[dict[str, Any]]) -> list[str]:
    return ["last" if r.get("checkpoint") is None else str(r["checkpoint"]) for r in members]


def _top(ax, members: list[dict[str, Any]], title: str) -> None:
    xs = np.arange(len(members))
    ax.plot(xs, [r["sink"] for r in members], "k-o", ms=3, label="clean sink")
    if any(r.get("kept") is not None for r in members):
        kept = [np.nan if r.get("kept") is None else r["kept"] * r["sink"] for r in members]
        abl = [np.nan if r.get("ablated") is None else r["ablated"] * r["sink"] for r in members]
        ax.plot(xs, kept, "-o", ms=3, color="#2ca02c", label="circuit kept")
        ax.plot(xs, abl, "-o", ms=3, color=LOWERS, label="circuit ablated")
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.5, len(members) - 0.5)
    ax.set_xticks(xs, [])
    ax.set_ylabel("sink score")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="upper left")


def _bottom(fig: Figure, ax, members: list[dict[str, Any]]) -> None:
    names: list[str] = []
    for r in members:
        for n in r.get("circuit") or []:
            if n not in names:
                names.append(n)
    ax.set_xticks(np.arange(len(members)), _x_labels(members), fontsize=6, rotation=90)
    ax.set_xlabel("checkpoint")
    if not names:
        ax.set_yticks([])
        ax.text(
            0.5, 0.5, "no circuit", ha="center", va="center", transform=ax.transAxes, fontsize=7
        )
        return
    grid = np.array(
        [[(r.get("effects") or {}).get(n, np.nan) for r in members] for n in names], dtype=float
    )
    lim, extend = effect_limit([v for v in grid.flatten().tolist() if v == v] or [0.0])
    ax.set_facecolor(NOT_PATCHED)  # NaN cells: the component was not patched exactly there
    im = ax.imshow(grid, cmap=EFFECT_CMAP, vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    fig.colorbar(im, ax=ax, label="sink change / clean sink", extend=extend, fraction=0.08)
    for j, r in enumerate(members):
        for i, n in enumerate(names):
            if n in (r.get("circuit") or []):
                ax.plot(j, i, "o", ms=3, color="black")
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("checkpoint (dot: in the circuit; grey: not patched exactly)", fontsize=7)


def sweep_figure(rows: list[dict[str, Any]]) -> Figure:
    """The sweep's circuits per checkpoint per model (module docstring)."""
    groups = _groups(rows)
    if not groups:
        raise MissingDataError("the sweep has no finished job with a sink to draw")
    n = len(groups)
    width = sum(max(2.6, 0.28 * len(m) + 1.8) for m in groups.values())
    fig = new_figure(min(4 + width, 24), 6.2)
    axes = fig.subplots(2, n, squeeze=False, height_ratios=(1, 1.6))
    for col, ((model, cf, command), members) in enumerate(sorted(groups.items())):
        _top(axes[0, col], members, f"{model} · {command}" + ("" if cf == "-" else f" · {cf}"))
        _bottom(fig, axes[1, col], members)
    fig.tight_layout()
    return fig
