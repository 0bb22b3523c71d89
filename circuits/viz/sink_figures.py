"""Figures of a sink measurement (``sink_metrics.json``): the per-layer profile, attention to P0
per head, the layer-0 recognition signal, and runs side by side (e.g. BOS vs no BOS).

Each function takes the saved JSON (a dict) and returns a ``matplotlib.figure.Figure``; it writes
nothing (``circuits.viz.files.save_figure`` does) and raises ``MissingDataError`` when the record
lacks what the figure needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from circuits.core.errors import MissingDataError
from circuits.viz.style import SINK_CMAP, integer_ticks, new_figure


def layer_profile_figure(metrics: dict[str, Any]) -> Figure:
    """Per-layer sink (attn_to_p0, sink score, sink rate) and P0 vs rest residual norm (log y).

    ``metrics`` is the content of ``sink_metrics.json``.
    """
    layers = metrics["layers"]
    xs = [row["layer"] for row in layers]
    fig = new_figure(11, 3.8)
    ax_sink, ax_norm = fig.subplots(1, 2)
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
    integer_ticks(ax_sink)
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
    integer_ticks(ax_norm)
    ax_norm.set_ylabel("l2 norm (log)")
    ax_norm.legend(fontsize=8, loc="upper left")
    ax_norm.set_title("P0 vs rest residual norm")
    bos = "with BOS" if metrics.get("bos") else "no BOS"
    fig.suptitle(
        f"{metrics.get('model', '?')} · {bos} · {metrics.get('n_tokens', '?')} tokens", fontsize=10
    )
    fig.tight_layout()
    return fig


def head_heatmap_figure(metrics: dict[str, Any], key: str = "attn_to_p0") -> Figure:
    """Layer x head heatmap of a per-head sink number of ``sink_metrics.json`` (default
    ``attn_to_p0``), annotated when the grid is small."""
    layers = metrics["layers"]
    n_heads = max((len(r.get("heads") or []) for r in layers), default=0)
    if n_heads == 0:
        raise MissingDataError("sink_metrics.json has no per-head numbers (layers[].heads)")
    grid = np.full((len(layers), n_heads), np.nan)
    for i, row in enumerate(layers):
        for h in row.get("heads") or []:
            grid[i, h["head"]] = h[key]
    fig = new_figure(min(2.2 + 0.55 * n_heads, 9), 1.2 + 0.2 * len(layers))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap=SINK_CMAP, vmin=0, vmax=1, aspect="auto", origin="lower")
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


def recognition_figure(metrics: dict[str, Any], max_positions: int = 64) -> Figure:
    """The layer-0 recognition signal per position: sum_i p_i^2 and attention-output norm."""
    rec = metrics.get("recognition") or {}
    sp, an = rec.get("layer0_sum_p_squared"), rec.get("layer0_attn_out_norm")
    if sp is None or an is None:
        raise MissingDataError("sink_metrics.json has no recognition signal")
    n = min(len(sp), len(an), max_positions)
    xs = np.arange(n)
    fig = new_figure(11, 3.2)
    a1, a2 = fig.subplots(1, 2)
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


def bos_comparison_figure(runs: list[dict[str, Any]], labels: list[str] | None = None) -> Figure:
    """Side by side (one column per ``sink_metrics.json``): attention to P0 / sink score per
    layer on a shared y axis (top), P0 vs rest residual norm on a shared log axis (bottom)."""
    if not runs:
        raise MissingDataError("bos_comparison_figure needs at least one sink_metrics.json")
    labels = labels or [_run_label(m) for m in runs]
    n = len(runs)
    fig = new_figure(4.6 * n, 6.2)
    axes = fig.subplots(2, n, squeeze=False, sharey="row")
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
        integer_ticks(top)
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
        integer_ticks(bottom)
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
