"""Static figures and a self-contained ``report.html`` for ``p0-circuits discover``.

Everything is drawn from ``patching.json``'s record and the circuit graph, so the report can be
rebuilt from the files alone (``circuits.render`` may later replace this minimal report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

from circuits.graph import CircuitGraph  # noqa: E402
from circuits.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def component_figure(record: dict[str, Any], path: Path) -> Path:
    """Relative effect of patching each component at P0 (exact) with the attribution estimate."""
    clean = record["clean"]["sink"]
    exact = {r["name"]: r["relative"] for r in record["components"]["effects"]}
    attr = {r["name"]: r["effect"] / clean for r in record["attribution"]["effects"]}
    layers = sorted({r["sites"][0]["layer"] for r in record["components"]["effects"] if r["sites"][0]["kind"] != "embed"})
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) + 2), 3.6))
    x = np.arange(len(layers))
    for off, kind, color in ((-0.2, "attn", "#1f77b4"), (0.2, "mlp", "#d62728")):
        vals = [exact.get(f"{kind}{la}@p0", np.nan) for la in layers]
        ax.bar(x + off, vals, width=0.4, color=color, label=f"{kind} (exact)")
        est = [attr.get(f"{kind}{la}@p0", np.nan) for la in layers]
        ax.scatter(x + off, est, marker="x", color="black", s=18, zorder=3,
                   label="attribution estimate" if kind == "attn" else None)
    if "embed@p0" in exact:
        ax.axhline(exact["embed@p0"], color="#9e9e9e", lw=1, ls="--", label="embed (exact)")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(x, [str(la) for la in layers], fontsize=7)
    ax.set_xlabel("layer of the patched component (P0 only)")
    ax.set_ylabel("sink change / clean sink")
    ax.set_title(f"{record['model']}: component sweep ({record['counterfactual']} counterfactual)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def head_figure(record: dict[str, Any], path: Path) -> Path | None:
    if not record.get("heads"):
        return None
    rows: dict[int, dict[int, float]] = {}
    for r in record["heads"]["effects"]:
        s = r["sites"][0]
        rows.setdefault(s["layer"], {})[s["head"]] = r["relative"]
    layers = sorted(rows)
    n_heads = max(max(v) for v in rows.values()) + 1
    grid = np.array([[rows[la].get(h, np.nan) for h in range(n_heads)] for la in layers])
    lim = np.nanmax(np.abs(grid)) or 1.0
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n_heads + 2), 0.5 * len(layers) + 1.5))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(layers)), [f"attn{la}" for la in layers])
    ax.set_xticks(range(n_heads), [f"h{h}" for h in range(n_heads)])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="sink change / clean sink")
    ax.set_title("head sweep at P0")
    return _save(fig, path)


def path_figure(record: dict[str, Any], path: Path) -> Path | None:
    pk = record.get("paths_k")
    if not pk:
        return None
    senders: list[str] = []
    cells: dict[tuple[str, int], float] = {}
    for r in pk["effects"]:
        s, rec = r["sites"][0]["name"], r["sites"][1]
        if s not in senders:
            senders.append(s)
        cells[(s, rec["layer"])] = r["relative"] if r["relative"] is not None else np.nan
    layers = sorted({la for _, la in cells})
    grid = np.array([[cells.get((s, la), np.nan) for la in layers] for s in senders])
    lim = np.nanmax(np.abs(grid)) or 1.0
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(layers) + 2), 0.45 * len(senders) + 1.6))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(senders)), senders, fontsize=8)
    ax.set_xticks(range(len(layers)), [str(la) for la in layers], fontsize=7)
    ax.set_xlabel("receiver layer (K input of all its heads)")
    fig.colorbar(im, ax=ax, label="sink change at that layer / its clean sink")
    ax.set_title("path patching: sender at P0 -> K of a later layer (direct path)")
    return _save(fig, path)


def graph_figure(graph: CircuitGraph, path: Path) -> Path:
    g = graph.g
    layers = [d["layer"] for _, d in g.nodes(data=True)] or [0]
    fig, ax = plt.subplots(figsize=(min(24, max(8, 0.6 * (max(layers) - min(layers) + 2))), 4.5))
    if g.number_of_nodes() == 0:
        ax.text(0.5, 0.5, "empty circuit", ha="center")
        ax.axis("off")
        return _save(fig, path)
    # layered layout: x = layer (+0.5 for MLPs); components on top, receivers (K inputs) below
    columns: dict[tuple[float, bool], list[str]] = {}
    for n, d in g.nodes(data=True):
        x = d["layer"] + (0.5 if d["kind"] in ("mlp", "mlp_in") else 0.0)
        receiver = d["kind"] in ("attn_q", "attn_k", "attn_v", "mlp_in")
        columns.setdefault((x, receiver), []).append(n)
    pos = {}
    for (x, receiver), names in columns.items():
        for i, n in enumerate(sorted(names)):
            pos[n] = (x, (-1.0 - 0.5 * i) if receiver else (1.0 + 0.5 * i))
    colors = [CircuitGraph._COLORS.get(d["kind"], "#ffffff") for _, d in g.nodes(data=True)]
    widths = [0.5 + 4 * min(1.0, abs(d.get("relative") or 0.0)) for _, _, d in g.edges(data=True)]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=500)
    labels = {n: n.replace("@p0", "") for n in g.nodes}
    nx.draw_networkx_labels(g, pos, labels=labels, ax=ax, font_size=6)
    nx.draw_networkx_edges(g, pos, ax=ax, width=widths, arrows=True, arrowsize=10,
                           edge_color="#555555", connectionstyle="arc3,rad=0.08")
    ax.set_title(f"{graph.graph_attrs.get('model', '')}: P0 sink circuit "
                 f"(kept {graph.graph_attrs.get('faithfulness_kept', float('nan')):.0%}, "
                 f"ablated {graph.graph_attrs.get('faithfulness_ablated', float('nan')):.0%})")
    ax.axis("off")
    return _save(fig, path)


def faithfulness_figure(record: dict[str, Any], path: Path) -> Path | None:
    f = record["faithfulness"]
    if not f.get("per_receiver"):
        return None
    layers = record["receiver_layers"]
    clean = [record["clean"]["per_receiver_layer"][str(la)] if str(la) in record["clean"]["per_receiver_layer"]
             else record["clean"]["per_receiver_layer"][la] for la in layers]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(layers, clean, "k-o", ms=3, label="clean")
    for vals, label, color in zip(f["per_receiver"], ("circuit kept, rest ablated", "circuit ablated", "all P0 components ablated"),
                                  ("#2ca02c", "#d62728", "#9e9e9e"), strict=True):
        ax.plot(layers, vals, "-o", ms=3, color=color, label=label)
    ax.set_xlabel("receiver layer")
    ax.set_ylabel("sink score (mean over heads)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("faithfulness per receiver layer")
    return _save(fig, path)


def write_figures(record: dict[str, Any], graph: CircuitGraph, out: Path) -> list[Path]:
    made = [
        component_figure(record, out / "components.png"),
        head_figure(record, out / "heads.png"),
        path_figure(record, out / "paths_k.png"),
        faithfulness_figure(record, out / "faithfulness.png"),
        graph_figure(graph, out / "circuit.png"),
    ]
    return [p for p in made if p is not None]

