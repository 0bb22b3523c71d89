"""Mixture-of-experts figures: where the model routes position 0 (``circuits.metrics.routing``)
in one measurement and over training, and which experts of blocks 0-1 carry the sink and P0's
amplification over training (``circuits.emergence.checkpoint_metrics.expert_effects``).

Each function takes saved JSON (a dict) and returns a ``matplotlib.figure.Figure``; it writes
nothing and raises ``MissingDataError`` when the record has no routing (a dense model).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from circuits.core.errors import MissingDataError
from circuits.viz.style import EFFECT_CMAP, effect_limit, new_figure


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
    fig.set_layout_engine("constrained")
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
    steps (solid), and at positions >= 1 (dashed, same colour); a triangle at the top marks each
    checkpoint where P0 has an expert of its own (``p0_has_own_expert``). ``trace``: ``trace.json``."""
    points = [c for c in trace["checkpoints"] if c.get("routing")]
    if not points:
        raise MissingDataError("trace.json has no routing (a dense model: no experts)")
    steps = [max(c["step"], 1) for c in points]  # step 0 drawn at 1 on the log axis
    shown = [la for la in layers if any(r["layer"] == la for r in points[0]["routing"]["layers"])]
    fig = new_figure(4.6 * len(shown) + 1.6, 3.8)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(shown), sharey=True))
    n = points[0]["routing"]["n_experts"]
    for ax, layer in zip(axes, shown, strict=True):
        rows = [next(r for r in c["routing"]["layers"] if r["layer"] == layer) for c in points]
        for e in range(n):
            p0 = [r["p0_distribution"][e] for r in rows]
            rest = [r["others_distribution"][e] for r in rows]
            ax.plot(steps, p0, "-", color=f"C{e % 10}")
            ax.plot(steps, rest, "--", color=f"C{e % 10}", alpha=0.6)
        own = [s for s, r in zip(steps, rows, strict=True) if r["p0_has_own_expert"]]
        ax.plot(own, [1.0] * len(own), "kv", ms=5, clip_on=False)  # P0 has an expert of its own
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training step (log; step 0 at 1)")
        ax.set_title(f"block {layer}: router probability per expert", fontsize=9)
    axes[0].set_ylabel("router probability (mean)")
    handles = [Line2D([], [], color=f"C{e % 10}", label=f"expert {e}") for e in range(n)]
    handles += [
        Line2D([], [], color="k", ls="-", label="at P0"),
        Line2D([], [], color="k", ls="--", alpha=0.6, label="at positions ≥ 1"),
        Line2D(
            [],
            [],
            color="k",
            marker="v",
            ls="",
            label="P0 has its own expert\n(circuits.metrics.routing)",
        ),
    ]
    fig.legend(handles=handles, fontsize=7, loc="outside right center")
    fig.suptitle("where P0 is routed over training", fontsize=10)
    return fig


def experts_over_training_figure(trace: dict[str, Any]) -> Figure:
    """Experts of blocks 0-1 x checkpoints: each expert mean-ablated at P0, its effect on the
    downstream sink (left) and on P0's norm after block 1 (right), as fractions of the clean
    value (blue: ablating the expert lowers it, i.e. the expert carries it). ``trace``:
    ``trace.json`` of an MoE run."""
    points = [c for c in trace["checkpoints"] if c.get("experts")]
    if not points:
        raise MissingDataError("trace.json has no expert effects (a dense model: no experts)")
    names = [
        f"mlp{row['layer']}.e{e}"
        for row in points[0]["experts"]["layers"]
        for e in range(len(row["sink_effect"]))
    ]
    fig = new_figure(max(10.0, 4 + 0.5 * len(points)), 2.4 + 0.3 * len(names))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, clean_of, title in (
        (axes[0], "sink_effect", lambda c: c["downstream_attn_to_p0"], "downstream sink"),
        (
            axes[1],
            "p0_norm_effect",
            lambda c: c["experts"]["clean_p0_norm_1"],
            "P0 norm after block 1",
        ),
    ):
        grid = np.array(
            [
                [
                    -v / clean_of(c) if clean_of(c) else np.nan  # ablated - clean, over clean
                    for row in c["experts"]["layers"]
                    for v in row[key]
                ]
                for c in points
            ],
            dtype=float,
        ).T
        lim, extend = effect_limit(grid[np.isfinite(grid)].tolist() or [0.0])
        im = ax.imshow(grid, cmap=EFFECT_CMAP, vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels([str(c["step"]) for c in points], rotation=90, fontsize=7)
        ax.set_xlabel("training step")
        ax.set_title(f"change in the {title}", fontsize=9)
        fig.colorbar(im, ax=ax, extend=extend, label="(ablated − clean) / clean")
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=8)
    fig.suptitle(
        "each expert's routed contribution at P0 mean-ablated\n(blue: ablating it lowers the "
        "quantity, i.e. the expert carries it)",
        fontsize=9,
    )
    return fig
