"""Where a mixture-of-experts model routes position 0 (``circuits.metrics.routing``): in one
measurement, and over training.

Each function takes saved JSON (a dict) and returns a ``matplotlib.figure.Figure``; it writes
nothing and raises ``MissingDataError`` when the record has no routing (a dense model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from circuits.core.errors import MissingDataError
from circuits.viz.style import new_figure


def _routing(record: dict[str, Any], what: str) -> dict[str, Any]:
    routing = record.get("routing")
    if not routing or not routing.get("layers"):
        raise MissingDataError(f"{what} has no routing (a dense model: no experts)")
    return routing


def routing_figure(metrics: dict[str, Any]) -> Figure:
    """Per MoE block: the router's mean probability of each expert at P0 against positions >= 1
    (bars), P0's expert marked. ``metrics``: ``sink_metrics.json``."""
    routing = _routing(metrics, "sink_metrics.json")
    layers = routing["layers"]
    fig = new_figure(min(3.2 * len(layers) + 1, 16), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(layers), sharey=True))
    n = routing["n_experts"]
    xs = np.arange(n)
    for ax, row in zip(axes, layers, strict=True):
        ax.bar(xs - 0.2, row["p0_distribution"], 0.4, color="C3", label="P0")
        ax.bar(xs + 0.2, row["others_distribution"], 0.4, color="C7", label="positions ≥ 1")
        own = " (P0's own)" if row["p0_has_own_expert"] else ""
        ax.set_title(f"block {row['layer']}: P0 → expert {row['p0_expert']}{own}", fontsize=9)
        ax.set_xticks(xs)
        ax.set_xlabel("expert")
    axes[0].set_ylabel("router probability (mean)")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{metrics.get('model', '?')}: where P0 is routed (router softmax before top-"
        f"{routing['experts_per_token']})",
        fontsize=10,
    )
    return fig


def routing_over_training_figure(trace: dict[str, Any], layers: tuple[int, ...] = (0, 1)) -> Figure:
    """For blocks ``layers``: the router's mean probability of each expert at P0 over training
    steps (solid), and at positions >= 1 (dashed, same colour). ``trace``: ``trace.json``."""
    points = [c for c in trace["checkpoints"] if c.get("routing")]
    if not points:
        raise MissingDataError("trace.json has no routing (a dense model: no experts)")
    steps = [max(c["step"], 1) for c in points]  # step 0 drawn at 1 on the log axis
    shown = [la for la in layers if any(r["layer"] == la for r in points[0]["routing"]["layers"])]
    fig = new_figure(5.2 * len(shown) + 0.5, 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(shown), sharey=True))
    n = points[0]["routing"]["n_experts"]
    for ax, layer in zip(axes, shown, strict=True):
        rows = [next(r for r in c["routing"]["layers"] if r["layer"] == layer) for c in points]
        for e in range(n):
            p0 = [r["p0_distribution"][e] for r in rows]
            rest = [r["others_distribution"][e] for r in rows]
            ax.plot(steps, p0, "-", color=f"C{e}", label=f"expert {e}: P0")
            ax.plot(steps, rest, "--", color=f"C{e}", alpha=0.6, label=f"expert {e}: positions ≥ 1")
        own = [s for s, r in zip(steps, rows, strict=True) if r["p0_has_own_expert"]]
        if own:
            ax.axvline(own[0], color="k", lw=0.8, ls=":")
            ax.text(own[0], 1.0, " P0's own expert from here", fontsize=7, va="top")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training step (log; step 0 at 1)")
        ax.set_title(f"block {layer}: router probability per expert", fontsize=9)
    axes[0].set_ylabel("router probability (mean)")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(
        "where P0 is routed over training (solid: P0; dashed: the other positions)", fontsize=10
    )
    return fig
