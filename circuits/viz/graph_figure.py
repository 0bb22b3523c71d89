"""The circuit graph drawn layer by layer: P0's embedding at the bottom, later layers higher,
edge width by |relative effect| and colour by sign (blue: patching the path lowers the sink)."""

from __future__ import annotations

from typing import Any

import networkx as nx
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from circuits.circuit.record import DiscoveryRecord
from circuits.core.conventions import RECEIVER_KINDS
from circuits.viz.style import (
    KIND_COLORS,
    LOWERS,
    RAISES,
    EffectWords,
    effect_color,
    effect_words,
    new_figure,
)

_STAGE_Y = {
    "embed": -1.0,
    "attn": 0.0,
    "head": 0.0,
    "mlp": 0.45,
    "expert": 0.45,
    "q": -0.3,
    "k": -0.3,
    "v": -0.3,
    "mlp_in": 0.3,
    "resid_pre": -0.4,
    "resid_mid": 0.3,
    "resid_post": 0.8,
}


def circuit_layout(g) -> dict[str, tuple[float, float]]:
    """Layer-by-layer positions: y = where the node sits in the forward pass (embedding / P0 at
    the bottom, later layers higher), x = a lane per kind (P0 attention left, MLPs middle,
    receivers right); nodes sharing a level spread within their lane on a staircase rising to the
    right, so that edges leaving them do not run through their neighbours."""
    levels: dict[tuple[float, int], list[str]] = {}
    parallel = bool(g.graph.get("parallel_attn_mlp"))
    for n, d in g.nodes(data=True):
        kind = d.get("kind", "attn")
        layer = d.get("layer", 0) or 0
        stage = _STAGE_Y.get(kind, 0.0)
        if parallel and kind in ("mlp", "mlp_in"):  # a parallel MLP reads and writes with attention
            stage = {"mlp": _STAGE_Y["attn"], "mlp_in": _STAGE_Y["k"]}[kind]
        y = -1.0 if kind == "embed" else layer + stage
        lane = 2 if kind in RECEIVER_KINDS else (1 if kind == "mlp" else 0)
        levels.setdefault((y, lane), []).append(n)
    width = {
        lane: max([len(v) for (_, ln), v in levels.items() if ln == lane] or [1])
        for lane in (0, 1, 2)
    }
    spacing = 0.9
    centers = {0: 0.0}
    centers[1] = centers[0] + spacing * (width[0] - 1) / 2 + 1.8 + spacing * (width[1] - 1) / 2
    centers[2] = centers[1] + spacing * (width[1] - 1) / 2 + 1.8 + spacing * (width[2] - 1) / 2
    pos = {}
    for (y, lane), names in levels.items():
        names.sort(key=lambda n: (g.nodes[n].get("head") or 0, n))
        mid = (len(names) - 1) / 2
        for i, n in enumerate(names):
            # a staircase rising towards the lanes on the right: edges leave it diagonally
            pos[n] = (centers[lane] + (i - mid) * spacing, y - 0.16 * (len(names) - 1 - i))
    return pos


def _draw(ax, g: nx.DiGraph, pos: dict[str, tuple[float, float]]) -> None:
    """Nodes coloured by kind and sized by |relative effect|; edges by |relative| and sign."""
    colors = [KIND_COLORS.get(d.get("kind"), "#ffffff") for _, d in g.nodes(data=True)]
    sizes = [
        300 + 900 * min(1.0, abs(d.get("relative") or 0.0)) if d.get("effect") is not None else 220
        for _, d in g.nodes(data=True)
    ]
    edges = list(g.edges(data=True))
    nx.draw_networkx_edges(
        g,
        pos,
        ax=ax,
        edgelist=[(u, v) for u, v, _ in edges],
        width=[0.6 + 7.0 * min(1.0, abs(d.get("relative") or 0.0)) for _, _, d in edges],
        edge_color=[effect_color(d.get("relative", d.get("effect"))) for _, _, d in edges],
        alpha=0.75,
        arrows=True,
        arrowsize=9,
        connectionstyle="arc3,rad=-0.15",
        node_size=sizes,
    )
    nx.draw_networkx_nodes(
        g, pos, ax=ax, node_color=colors, node_size=sizes, edgecolors="black", linewidths=0.5
    )
    for n, (x, y) in pos.items():
        rel = g.nodes[n].get("relative")
        label = n.replace("@p0", "") + ("" if rel is None else f"\n{rel:+.0%}")
        ax.text(x + 0.28, y - 0.04, label, fontsize=6.5, va="top", ha="left")


def _axes_and_legend(
    ax, g: nx.DiGraph, pos: dict[str, tuple[float, float]], words: EffectWords | None = None
) -> None:
    """One y tick per layer the circuit spans, the P0 marker, and the kind/sign legend."""
    ys = [p[1] for p in pos.values()]
    if "embed@p0" not in g:
        lo = min(ys) - 1
        ax.text(
            min(p[0] for p in pos.values()),
            lo,
            "position 0 (P0 token)",
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": "#eeeeee"},
        )
        ax.set_ylim(lo - 0.8, None)
    ax.margins(y=0.08)
    layers = [d.get("layer") or 0 for _, d in g.nodes(data=True) if (d.get("layer") or 0) >= 0]
    if layers:  # one tick per layer the circuit spans, none skipped
        ax.set_yticks(range(min(layers), max(layers) + 1))
    ax.set_ylabel("layer (P0 at the bottom)")
    ax.tick_params(left=True, labelleft=True, bottom=False, labelbottom=False)
    for spine in ("top", "right", "bottom"):
        ax.spines[spine].set_visible(False)
    kinds = sorted({d.get("kind") for _, d in g.nodes(data=True)})
    handles = [
        Line2D([], [], marker="o", ls="", color=KIND_COLORS.get(k, "#fff"), label=k) for k in kinds
    ]
    blue, red = (
        ("patch lowers the sink", "patch raises the sink")
        if words is None
        else (words.blue, words.red)
    )
    handles += [
        Line2D([], [], color=LOWERS, lw=3, label=blue),
        Line2D([], [], color=RAISES, lw=3, label=red),
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def circuit_graph_figure(
    graph, title: str | None = None, *, record: DiscoveryRecord | dict[str, Any] | None = None
) -> Figure:
    """The circuit drawn layer by layer, P0's embedding at the bottom; edge width by |relative
    effect| (sink change / the path's clean sink), colour by sign (blue: patching the path
    lowers the sink, i.e. the path carries it). ``graph``: a ``CircuitGraph`` or networkx graph;
    ``record`` (its ``patching.json``) adds kept / ablated to the title."""
    g = getattr(graph, "g", graph)
    pos = circuit_layout(g)
    ys = [p[1] for p in pos.values()] or [0]
    xs = [p[0] for p in pos.values()] or [0]
    x_lo, x_hi = min(xs) - 0.9, max(xs) + 1.3
    fig = new_figure(
        min(3.5 + 0.75 * (x_hi - x_lo), 16), min(2.5 + 0.55 * (max(ys) - min(ys) + 1), 14)
    )
    ax = fig.subplots()
    if g.number_of_nodes() == 0:
        ax.text(
            0.5,
            0.5,
            "empty circuit: no P0 component passed the threshold",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.axis("off")
        return fig
    _draw(ax, g, pos)
    ax.set_xlim(x_lo, x_hi)
    rec = None if record is None else DiscoveryRecord.of(record)
    words = None if rec is None else effect_words(rec)
    _axes_and_legend(ax, g, pos, words)
    faith = None if rec is None else rec.faithfulness
    kept, abl = (None, None) if faith is None else (faith.kept, faith.ablated)
    what = (
        "sink circuit"
        if words is None or words.readout == "sink"
        else f"circuit for the {words.readout}"
    )
    default = f"{g.graph.get('model', '')} P0 {what}"
    if kept is not None and abl is not None:
        default += f" (kept {kept:.0%}, ablated {abl:.0%})"
    ax.set_title(title or default, fontsize=9)
    fig.tight_layout()
    return fig
