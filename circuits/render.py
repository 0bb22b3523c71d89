"""Figures and reports. Static figures are matplotlib (Agg backend, PNG + SVG)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

if "ipykernel" not in sys.modules:  # scripts and the CLI: no display needed; Jupyter keeps inline
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from circuits.errors import UsageError  # noqa: E402
from circuits.io import atomic_path  # noqa: E402


def save_figure(fig, stem: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``stem.png`` / ``stem.svg`` atomically and close it."""
    written = []
    for fmt in formats:
        target = Path(f"{stem}.{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def layer_profile_figure(metrics: dict[str, Any]):
    """Per-layer sink (attn_to_p0, sink score, sink rate) and P0 vs rest residual norm (log y).

    ``metrics`` is the content of ``sink_metrics.json``.
    """
    layers = metrics["layers"]
    xs = [row["layer"] for row in layers]
    fig, (ax_sink, ax_norm) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax_sink.plot(xs, [r["attn_to_p0"] for r in layers], "o-", label="attn_to_p0 (queries ≥ 1)")
    ax_sink.plot(xs, [r["sink_score"] for r in layers], "s--", label="sink score α₀ (Gu et al.)")
    ax_sink.bar(
        xs,
        [r["sink_rate"] for r in layers],
        alpha=0.2,
        color="gray",
        label=f"sink rate (ε = {metrics.get('eps', 0.3)})",
    )
    ax_sink.set_ylim(0, 1.02)
    ax_sink.set_xlabel("layer")
    ax_sink.set_ylabel("attention to position 0")
    ax_sink.legend(fontsize=8, loc="upper left")
    ax_sink.set_title("attention sink on P0")

    ax_norm.semilogy(xs, [r["p0_norm"] for r in layers], "o-", color="C3", label="P0 residual norm")
    ax_norm.semilogy(
        xs,
        [r["rest_norm_median"] for r in layers],
        "o-",
        color="C7",
        label="median norm, positions ≥ 1",
    )
    ax_norm.set_xlabel("layer (resid_post)")
    ax_norm.set_ylabel("l2 norm (log)")
    ax_norm.legend(fontsize=8, loc="upper left")
    ax_norm.set_title("P0 vs rest residual norm")
    bos = "with BOS" if metrics.get("bos") else "no BOS"
    fig.suptitle(
        f"{metrics.get('model', '?')} · {bos} · {metrics.get('n_tokens', '?')} tokens", fontsize=10
    )
    fig.tight_layout()
    return fig


# =============================================================================================
# More figures (everything below is drawn from saved JSON alone)
# =============================================================================================


def head_heatmap_figure(metrics: dict[str, Any], key: str = "attn_to_p0"):
    """Layer x head heatmap of a per-head sink number of ``sink_metrics.json`` (default
    ``attn_to_p0``), annotated when the grid is small."""
    layers = metrics["layers"]
    n_heads = max((len(r.get("heads") or []) for r in layers), default=0)
    if n_heads == 0:
        raise UsageError("sink_metrics.json has no per-head numbers (layers[].heads)")
    grid = np.full((len(layers), n_heads), np.nan)
    for i, row in enumerate(layers):
        for h in row.get("heads") or []:
            grid[i, h["head"]] = h[key]
    fig, ax = plt.subplots(figsize=(min(2.2 + 0.55 * n_heads, 9), 1.2 + 0.2 * len(layers)))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto", origin="lower")
    ax.set_xticks(range(n_heads), [str(h) for h in range(n_heads)], fontsize=7)
    step = max(1, len(layers) // 15)
    ax.set_yticks(
        range(0, len(layers), step), [str(r["layer"]) for r in layers][::step], fontsize=7
    )
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    if grid.size <= 400:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=5.5,
                        color="white" if grid[i, j] < 0.6 else "black",
                    )
    fig.colorbar(im, ax=ax, label=key.replace("_", " "))
    bos = "BOS" if metrics.get("bos") else "no BOS"
    ax.set_title(f"{metrics.get('model', '?')} ({bos}): {key} per head", fontsize=9)
    fig.tight_layout()
    return fig


def recognition_figure(metrics: dict[str, Any], max_positions: int = 64):
    """The layer-0 recognition signal per position: sum_i p_i^2 and attention-output norm."""
    rec = metrics.get("recognition") or {}
    sp, an = rec.get("layer0_sum_p_squared"), rec.get("layer0_attn_out_norm")
    if sp is None or an is None:
        raise UsageError("sink_metrics.json has no recognition signal")
    n = min(len(sp), len(an), max_positions)
    xs = np.arange(n)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.2))
    a1.plot(xs, sp[:n], "o-", ms=3)
    a1.plot([0], [sp[0]], "o", color="C3", ms=7, label="P0")
    a1.set_xlabel("query position")
    a1.set_ylabel("layer-0 Σᵢ pᵢ² (mean over heads)")
    a1.set_ylim(0, 1.05)
    a1.legend(fontsize=8)
    a1.set_title("attention concentration (1 = one key)", fontsize=9)
    a2.plot(xs, an[:n], "o-", ms=3, color="C2")
    a2.plot([0], [an[0]], "o", color="C3", ms=7, label="P0")
    a2.set_xlabel("position")
    a2.set_ylabel("‖layer-0 attention output‖")
    a2.legend(fontsize=8)
    a2.set_title("layer-0 attention-output norm", fontsize=9)
    bos = "BOS" if metrics.get("bos") else "no BOS"
    fig.suptitle(
        f"{metrics.get('model', '?')} ({bos}): recognition through the causal mask, "
        f"first {n} positions",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _run_label(metrics: dict[str, Any]) -> str:
    bos = "with BOS" if metrics.get("bos") else "no BOS"
    return f"{metrics.get('model', '?')} · {bos} · {metrics.get('n_tokens', '?')} tok"


def bos_comparison_figure(runs: list[dict[str, Any]], labels: list[str] | None = None):
    """Side by side (one column per ``sink_metrics.json``): attention to P0 / sink score per
    layer on a shared y axis (top), P0 vs rest residual norm on a shared log axis (bottom)."""
    if not runs:
        raise UsageError("bos_comparison_figure needs at least one sink_metrics.json")
    labels = labels or [_run_label(m) for m in runs]
    n = len(runs)
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 6.2), squeeze=False, sharey="row")
    for j, (m, label) in enumerate(zip(runs, labels, strict=True)):
        layers = m["layers"]
        xs = [r["layer"] for r in layers]
        top, bottom = axes[0][j], axes[1][j]
        top.plot(xs, [r["attn_to_p0"] for r in layers], "o-", ms=3, label="attn_to_p0")
        top.plot(xs, [r["sink_score"] for r in layers], "s--", ms=3, label="sink score α₀")
        top.bar(xs, [r["sink_rate"] for r in layers], alpha=0.2, color="gray", label="sink rate")
        top.set_ylim(0, 1.02)
        top.set_title(label, fontsize=9)
        top.set_xlabel("layer")
        bottom.semilogy(xs, [r["p0_norm"] for r in layers], "o-", ms=3, color="C3", label="P0")
        bottom.semilogy(
            xs,
            [r["rest_norm_median"] for r in layers],
            "o-",
            ms=3,
            color="C7",
            label="median, positions ≥ 1",
        )
        bottom.set_xlabel("layer (resid_post)")
        rate = m.get("sink_rate_from_layer2")
        if rate is not None:
            top.text(
                0.98,
                0.95,
                f"Sink₀[2:] = {rate:.0%}",
                transform=top.transAxes,
                ha="right",
                va="top",
                fontsize=8,
            )
    axes[0][0].set_ylabel("attention to P0")
    axes[1][0].set_ylabel("residual l2 norm (log)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    axes[1][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("BOS vs no BOS: the sink on P0 and P0's residual norm", fontsize=10)
    fig.tight_layout()
    return fig


# --- discover: patching heatmaps and the circuit graph ----------------------------------------


def _effects_by_name(block: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not block:
        return {}
    return {r["name"]: r for r in block.get("effects", [])}


def _relative(row: dict[str, Any], clean: float) -> float:
    rel = row.get("relative")
    if rel is None:
        rel = row["effect"] / clean if clean else 0.0
    return float(rel)


def component_heatmap_figure(record: dict[str, Any]):
    """Layer x component heatmap of exact patching at P0: rows embed / attn / mlp, columns
    layers, colour = sink change / clean sink (blue: patching lowers the sink)."""
    clean = float(record["clean"]["sink"])
    exact = _effects_by_name(record.get("components"))
    if not exact:
        raise UsageError("patching.json has no component sweep (components.effects)")
    sites = [r["sites"][0] for r in exact.values()]
    layers = sorted({s["layer"] for s in sites if s["kind"] != "embed"})
    kinds = [k for k in ("mlp", "attn") if any(s["kind"] == k for s in sites)]
    grid = np.full((len(kinds) + 1, len(layers)), np.nan)
    for row in exact.values():
        s = row["sites"][0]
        if s["kind"] == "embed":
            grid[0, 0] = _relative(row, clean)
        elif s["kind"] in kinds:
            grid[1 + kinds[::-1].index(s["kind"]), layers.index(s["layer"])] = _relative(row, clean)
    # rows bottom to top: embed (layer 0 column only), attn, mlp
    lim = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    lim = lim or 1.0
    fig, ax = plt.subplots(figsize=(min(2.5 + 0.33 * len(layers), 12), 2.6))
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    ax.set_yticks(range(len(kinds) + 1), ["embed"] + kinds[::-1])
    ax.set_xticks(range(len(layers)), [str(la) for la in layers], fontsize=7)
    ax.set_xlabel("layer")
    if len(layers) <= 24:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="sink change / clean sink")
    ax.set_title(
        f"{record.get('model', '?')}: patching each component at P0 "
        f"({record.get('counterfactual', '?')} counterfactual)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def head_patching_heatmap_figure(record: dict[str, Any]):
    """Layer x head heatmap at P0: exact head patching where the head sweep ran, the
    attribution-patching estimate elsewhere (those cells are hatched)."""
    clean = float(record["clean"]["sink"])
    exact = _effects_by_name(record.get("heads"))
    attr = _effects_by_name(record.get("attribution"))
    cells: dict[tuple[int, int], tuple[float, bool]] = {}
    for source, is_exact in ((attr, False), (exact, True)):
        for row in source.values():
            s = row["sites"][0]
            if s["kind"] == "head":
                cells[(s["layer"], s["head"])] = (
                    _relative(row, clean) if is_exact else float(row["effect"]) / clean,
                    is_exact,
                )
    if not cells:
        raise UsageError("patching.json has no head effects (heads or attribution)")
    layers = sorted({la for la, _ in cells})
    n_heads = max(h for _, h in cells) + 1
    grid = np.full((len(layers), n_heads), np.nan)
    for (la, h), (v, _) in cells.items():
        grid[layers.index(la), h] = v
    lim = float(np.nanmax(np.abs(grid))) or 1.0
    fig, ax = plt.subplots(figsize=(min(2.5 + 0.6 * n_heads, 9), 1.4 + 0.24 * len(layers)))
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    for (la, h), (v, is_exact) in cells.items():
        i = layers.index(la)
        if not is_exact:
            ax.add_patch(
                matplotlib.patches.Rectangle(
                    (h - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", lw=0, color="#777777"
                )
            )
        if grid.size <= 300:
            ax.text(
                h,
                i,
                f"{v:+.2f}",
                ha="center",
                va="center",
                fontsize=6,
                fontweight="bold" if is_exact else "normal",
            )
    ax.set_xticks(range(n_heads), [str(h) for h in range(n_heads)], fontsize=7)
    step = max(1, len(layers) // 15)
    ax.set_yticks(range(0, len(layers), step), [str(la) for la in layers][::step], fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="sink change / clean sink")
    n_exact = sum(1 for v in cells.values() if v[1])
    ax.set_title(
        f"head patching at P0 ({n_exact} exact, bold; hatched: attribution estimate)", fontsize=9
    )
    fig.tight_layout()
    return fig


_KIND_COLORS = {
    "embed": "#9e9e9e",
    "attn": "#1f77b4",
    "head": "#6baed6",
    "mlp": "#d62728",
    "attn_q": "#2ca02c",
    "attn_k": "#ff7f0e",
    "attn_v": "#9467bd",
    "mlp_in": "#e377c2",
}
_STAGE_Y = {
    "embed": -1.0,
    "attn": 0.0,
    "head": 0.0,
    "mlp": 0.45,
    "attn_q": -0.3,
    "attn_k": -0.3,
    "attn_v": -0.3,
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
    for n, d in g.nodes(data=True):
        kind = d.get("kind", "attn")
        layer = d.get("layer", 0) or 0
        y = -1.0 if kind == "embed" else layer + _STAGE_Y.get(kind, 0.0)
        lane = 2 if kind.startswith("attn_") or kind == "mlp_in" else (1 if kind == "mlp" else 0)
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


def circuit_graph_figure(graph, title: str | None = None):
    """The circuit drawn layer by layer, P0's embedding at the bottom; edge width by |relative
    effect| (sink change / the path's clean sink), colour by sign (blue: patching the path
    lowers the sink, i.e. the path carries it). ``graph``: a ``CircuitGraph`` or networkx graph."""
    import networkx as nx
    from matplotlib.lines import Line2D

    g = getattr(graph, "g", graph)
    attrs = g.graph
    ys = [p[1] for p in circuit_layout(g).values()] or [0]
    span = max(ys) - min(ys) + 1
    xs_all = [p[0] for p in circuit_layout(g).values()] or [0]
    x_lo, x_hi = min(xs_all) - 0.9, max(xs_all) + 1.3
    fig, ax = plt.subplots(
        figsize=(min(3.5 + 0.75 * (x_hi - x_lo), 16), min(2.5 + 0.55 * span, 14))
    )
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
    pos = circuit_layout(g)
    colors = [_KIND_COLORS.get(d.get("kind"), "#ffffff") for _, d in g.nodes(data=True)]
    sizes = [
        300 + 900 * min(1.0, abs(d.get("relative") or 0.0)) if d.get("effect") is not None else 220
        for _, d in g.nodes(data=True)
    ]
    edges = list(g.edges(data=True))
    widths = [0.6 + 7.0 * min(1.0, abs(d.get("relative") or 0.0)) for _, _, d in edges]
    ecolors = ["#2166ac" if (d.get("effect") or 0.0) < 0 else "#b2182b" for _, _, d in edges]
    nx.draw_networkx_edges(
        g,
        pos,
        ax=ax,
        edgelist=[(u, v) for u, v, _ in edges],
        width=widths,
        edge_color=ecolors,
        alpha=0.75,
        arrows=True,
        arrowsize=9,
        connectionstyle="arc3,rad=-0.15",
        node_size=sizes,
    )
    nx.draw_networkx_nodes(
        g, pos, ax=ax, node_color=colors, node_size=sizes, edgecolors="black", linewidths=0.5
    )
    labels = {}
    for n, d in g.nodes(data=True):
        rel = d.get("relative")
        labels[n] = n.replace("@p0", "") + ("" if rel is None else f"\n{rel:+.0%}")
    for n, (x, y) in pos.items():
        ax.text(x + 0.28, y - 0.04, labels[n], fontsize=6.5, va="top", ha="left")
    if "embed@p0" not in g:
        lo = min(p[1] for p in pos.values()) - 1
        ax.text(
            min(xs_all),
            lo,
            "position 0 (P0 token)",
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": "#eeeeee"},
        )
        ax.set_ylim(lo - 0.8, None)
    ax.set_xlim(x_lo, x_hi)
    ax.margins(y=0.08)
    ax.set_yticks(sorted({math.floor(y) for y in ys if y >= 0}))
    ax.set_ylabel("layer (P0 at the bottom)")
    ax.tick_params(left=True, labelleft=True, bottom=False, labelbottom=False)
    for spine in ("top", "right", "bottom"):
        ax.spines[spine].set_visible(False)
    kinds = sorted({d.get("kind") for _, d in g.nodes(data=True)})
    handles = [
        Line2D([], [], marker="o", ls="", color=_KIND_COLORS.get(k, "#fff"), label=k) for k in kinds
    ]
    handles += [
        Line2D([], [], color="#2166ac", lw=3, label="patch lowers the sink"),
        Line2D([], [], color="#b2182b", lw=3, label="patch raises the sink"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    kept, abl = attrs.get("faithfulness_kept"), attrs.get("faithfulness_ablated")
    default = f"{attrs.get('model', '')} P0 sink circuit"
    if kept is not None and abl is not None:
        default += f" (kept {kept:.0%}, ablated {abl:.0%})"
    ax.set_title(title or default, fontsize=9)
    fig.tight_layout()
    return fig


def build_report(out_dir: str | Path, **kwargs: Any) -> Path:
    """Write ``out_dir/report.html`` from the JSON in ``out_dir``: see ``circuits.report``."""
    from circuits.report import build_report as _build

    return _build(out_dir, **kwargs)
