"""Figures of a discovery (``patching.json``): exact patching per component and per head, path
patching into each later layer's keys, faithfulness per receiver layer, and the clean sink.

Each function takes the record (a ``circuits.circuit.record.DiscoveryRecord``, or the
``patching.json`` dict, which it reads as one) and returns a ``matplotlib.figure.Figure``; it
writes nothing and raises ``MissingDataError`` when the record lacks what it needs. Effects are coloured
the one way (``circuits.viz.style``): blue, the patch lowers the sink.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import PercentFormatter

from circuits.circuit.record import CircuitFaithfulness, DiscoveryRecord, EffectRow, EffectTable
from circuits.core.errors import MissingDataError
from circuits.viz.style import (
    EFFECT_CMAP,
    KIND_COLORS,
    effect_limit,
    effect_words,
    integer_ticks,
    new_figure,
    percent_label,
    text_color,
)

Record = DiscoveryRecord | dict[str, Any]
"""What a figure takes: the typed record or its JSON form."""


def _effects_by_name(table: EffectTable | None) -> dict[str, EffectRow]:
    return {} if table is None else table.by_name()


def _effect_image(
    fig: Figure, ax, grid: np.ndarray, label: str, *, clip_outlier: bool = True
) -> float:
    """Draw ``grid`` of relative effects on the shared diverging scale, with its colour bar in
    percent of the clean sink; returns the scale's limit. ``clip_outlier=False``: the scale
    reaches the largest effect (no cell saturates; small ones are pale but labelled)."""
    if clip_outlier:
        lim, extend = effect_limit(grid.flatten().tolist())
    else:
        finite = np.abs(grid[np.isfinite(grid)])
        lim, extend = (float(finite.max()) if finite.size and finite.max() > 0 else 1.0), "neither"
    im = ax.imshow(grid, cmap=EFFECT_CMAP, vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    bar = fig.colorbar(im, ax=ax, label=label, extend=extend)
    bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    return lim


def _cells(
    record: DiscoveryRecord, exact: EffectTable | None
) -> dict[str, tuple[dict[str, Any], float, bool]]:
    """Per site name: (site, sink change / clean sink, exact?). The exact patching of
    ``exact`` where it ran, the first-pass estimate everywhere else."""
    clean = record.effect_span()
    cells = {}
    for table, is_exact in ((record.first_pass, False), (exact, True)):
        for name, row in _effects_by_name(table).items():
            value = row.relative_to(clean) if is_exact else float(row.effect or 0.0) / clean
            cells[name] = (row.site, value, is_exact)
    return cells


def _mark_cells(
    ax, marks: list[tuple[int, int, float, bool]], limit: float, annotate: bool
) -> None:
    """Hatch the first-pass estimates lightly; write each value in percent of the clean sink
    (exact ones bold), in white on dark cells, if there is room."""
    for i, j, v, is_exact in marks:
        if not is_exact:
            ax.add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", lw=0, color="#b0b0b0")
            )
        if annotate:
            weight = "bold" if is_exact else "normal"
            ax.text(
                j,
                i,
                percent_label(v),
                ha="center",
                va="center",
                fontsize=6,
                fontweight=weight,
                color=text_color(v, limit),
            )


def component_heatmap_figure(record: Record) -> Figure:
    """Layer x component heatmap at P0: rows embed / attn / mlp, one column per layer, colour =
    sink change / clean sink (blue: patching lowers the sink). Components patched exactly (the
    ones the first pass selected) are bold; every other layer shows the first-pass
    estimate, hatched, so no layer is silently left out."""
    record = DiscoveryRecord.of(record)
    cells = {
        n: c
        for n, c in _cells(record, record.components).items()
        if c[0]["kind"] in ("embed", "attn", "mlp")
    }
    if not any(is_exact for _, _, is_exact in cells.values()):
        raise MissingDataError("patching.json has no component sweep (components.effects)")
    kinds = [k for k in ("attn", "mlp") if any(c[0]["kind"] == k for c in cells.values())]
    top = max(c[0]["layer"] for c in cells.values())
    layers = list(range(top + 1))
    grid = np.full((len(kinds) + 1, len(layers)), np.nan)
    marks = []
    for site, value, is_exact in cells.values():  # rows bottom to top: embed, attn, mlp
        i = 0 if site["kind"] == "embed" else 1 + kinds.index(site["kind"])
        j = 0 if site["kind"] == "embed" else site["layer"]
        grid[i, j] = value
        marks.append((i, j, value, is_exact))
    fig = new_figure(min(2.5 + 0.45 * len(layers), 15), 2.6)
    ax = fig.subplots()
    lim = _effect_image(fig, ax, grid, effect_words(record).axis)
    _mark_cells(ax, marks, lim, annotate=len(layers) <= 32)
    ax.set_yticks(range(len(kinds) + 1), ["embed", *kinds])
    ax.set_xticks(range(len(layers)), [str(la) for la in layers], fontsize=7)
    ax.set_xlabel("layer")
    n_exact = sum(1 for m in marks if m[3])
    ax.set_title(
        f"{record.model or '?'}: patching each component at P0 "
        f"({record.counterfactual or '?'} counterfactual; {n_exact} exact, bold; "
        "hatched: first-pass estimate)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def head_patching_heatmap_figure(record: Record) -> Figure:
    """Layer x head heatmap at P0: exact head patching where the head sweep ran, the
    first-pass estimate elsewhere (those cells are hatched)."""
    record = DiscoveryRecord.of(record)
    cells = {n: c for n, c in _cells(record, record.heads).items() if c[0]["kind"] == "head"}
    if not cells:
        raise MissingDataError("patching.json has no head effects (heads or a first-pass estimate)")
    layers = sorted({c[0]["layer"] for c in cells.values()})
    n_heads = max(c[0]["head"] for c in cells.values()) + 1
    grid = np.full((len(layers), n_heads), np.nan)
    marks = []
    for site, value, is_exact in cells.values():
        i, j = layers.index(site["layer"]), site["head"]
        grid[i, j] = value
        marks.append((i, j, value, is_exact))
    fig = new_figure(min(2.5 + 0.6 * n_heads, 9), 1.4 + 0.24 * len(layers))
    ax = fig.subplots()
    # one head far above the rest must not make -13% and -3.4% the same colour
    lim = _effect_image(fig, ax, grid, effect_words(record).axis, clip_outlier=False)
    _mark_cells(ax, marks, lim, annotate=grid.size <= 300)
    ax.set_xticks(range(n_heads), [str(h) for h in range(n_heads)], fontsize=7)
    ax.set_yticks(
        range(len(layers)), [str(la) for la in layers], fontsize=6 if len(layers) > 20 else 7
    )
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    n_exact = sum(1 for m in marks if m[3])
    ax.set_title(
        f"head patching at P0 ({n_exact} exact, bold; hatched: first-pass estimate)", fontsize=9
    )
    fig.tight_layout()
    return fig


def path_figure(record: Record) -> Figure:
    """Path patching, sender at P0 -> K input of each later layer (the direct path): the sink
    change at that layer over the clean sink of all receiver layers (the discovery's clean
    value), one row per sender (blue: the path carries the sink). Dividing by the one clean
    value, not by each layer's own, keeps a large relative change of a layer with a negligible
    sink from dominating the figure."""
    rec = DiscoveryRecord.of(record)
    pk = rec.paths_k
    if pk is None or not pk.effects:
        raise MissingDataError("patching.json has no paths into keys (paths_k)")
    clean = rec.effect_span()
    senders: list[str] = []
    cells: dict[tuple[str, int], float] = {}
    for r in pk.effects:
        s, receiver = r.site["name"], r.sites[1]
        if s not in senders:
            senders.append(s)
        value = float(r.effect) / clean if r.effect is not None and clean else np.nan
        cells[(s, receiver["layer"])] = value
    layers = sorted({la for _, la in cells})
    grid = np.array([[cells.get((s, la), np.nan) for la in layers] for s in senders])
    fig = new_figure(max(6, 0.3 * len(layers) + 2), 0.45 * len(senders) + 1.6)
    ax = fig.subplots()
    label = (
        "sink change at that layer\n/ clean sink of all receivers"
        if effect_words(rec).readout == "sink"
        else effect_words(rec).axis
    )
    _effect_image(fig, ax, grid, label)
    ax.set_yticks(range(len(senders)), senders, fontsize=8)
    ax.set_xticks(range(len(layers)), [str(la) for la in layers], fontsize=7)
    ax.set_xlabel("receiver layer (K input of all its heads)")
    ax.set_title("path patching: sender at P0 -> K of a later layer (direct path)", fontsize=9)
    fig.tight_layout()
    return fig


def _kept_panel(ax, faith: CircuitFaithfulness, backups: list[str], readout: str) -> None:
    through = faith.core_kept_through_layer
    xs = [row.layer for row in through]
    ys = [row.kept for row in through]
    ax.plot(xs, ys, "-o", ms=3, color="#2ca02c", label="core circuit kept")
    if backups:
        ax.axhline(
            faith.kept,
            color="#1f77b4",
            ls="-.",
            lw=1,
            label=f"with backups {', '.join(backups)}: all others ablated",
        )
    ax.axhline(faith.floor, color="#9e9e9e", ls="--", lw=1, label="all P0 components ablated")
    ax.axhline(1.0, color="k", lw=0.8, label="clean")
    ax.set_xlabel("L: non-circuit P0 components ablated in layers <= L")
    integer_ticks(ax)
    ax.set_ylabel(
        "sink / clean sink" if readout == "sink" else f"share of P0's effect on the {readout}"
    )
    ax.set_ylim(min(0, *ys), max(1.05, *ys))
    ax.legend(fontsize=7)
    ax.set_title("circuit kept: where the rest is needed", fontsize=9)


def faithfulness_figure(record: Record) -> Figure:
    """The sink per receiver layer: clean, circuit kept (rest patched), circuit patched, every P0
    component patched; and, when measured, the core circuit's kept sink as more of the other
    components are ablated (``core_kept_through_layer``)."""
    record = DiscoveryRecord.of(record)
    faith = record.faithfulness
    readout = effect_words(record).readout
    if faith is None or record.clean is None:
        raise MissingDataError("patching.json has no faithfulness")
    backups = (record.backups.nodes if record.backups is not None else None) or []
    if not faith.per_receiver:  # a readout without layers (loss, KL): where it is kept
        if not faith.core_kept_through_layer:
            raise MissingDataError("patching.json has no per-receiver faithfulness")
        fig = new_figure(6, 3.4)
        _kept_panel(fig.subplots(), faith, backups, readout)
        fig.tight_layout()
        return fig
    layers = record.receiver_layers or []
    per_layer = record.clean.per_receiver_layer
    if faith.core_kept_through_layer:
        fig = new_figure(12, 3.4)
        ax, ax2 = fig.subplots(1, 2, width_ratios=(7, 5))
        _kept_panel(ax2, faith, backups, readout)
    else:
        fig = new_figure(7, 3.4)
        ax = fig.subplots()
    ax.plot(layers, [per_layer[la] for la in layers], "k-o", ms=3, label="clean")
    labels = ("circuit kept, rest ablated", "circuit ablated", "all P0 components ablated")
    for vals, label, color in zip(
        faith.per_receiver, labels, ("#2ca02c", "#d62728", "#9e9e9e"), strict=True
    ):
        ax.plot(layers, vals, "-o", ms=3, color=color, label=label)
    ax.set_xlabel("receiver layer")
    integer_ticks(ax)
    ax.set_ylabel("sink score (mean over heads)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("faithfulness per receiver layer", fontsize=9)
    fig.tight_layout()
    return fig


def clean_sink_figure(record: Record) -> Figure:
    """The clean sink score of every layer, the receiver layers shaded."""
    record = DiscoveryRecord.of(record)
    vals = record.clean_sink_all_layers
    if not vals:
        raise MissingDataError("patching.json has no clean sink per layer")
    fig = new_figure(7, 2.8)
    ax = fig.subplots()
    ax.plot(range(len(vals)), vals, "o-", ms=3, color="black")
    rec = record.receiver_layers or []
    if rec:
        ax.axvspan(
            min(rec) - 0.5, max(rec) + 0.5, color="#1f77b4", alpha=0.08, label="receiver layers"
        )
        ax.legend(fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    integer_ticks(ax)
    ax.set_ylabel("sink score")
    ax.set_title("clean sink per layer", fontsize=9)
    fig.tight_layout()
    return fig


def _label_points(ax, points: list[tuple[str, float, float]]) -> None:
    """Label ``points`` (name, x, y) without overlaps: adjustText moves the labels apart and draws
    a thin leader line to each point."""
    from adjustText import adjust_text

    texts = [ax.text(x, y, name, fontsize=6) for name, x, y in points]
    xs = [x for _, x, _ in points]
    ys = [y for _, _, y in points]
    adjust_text(
        texts,
        x=xs,
        y=ys,
        ax=ax,
        expand=(1.3, 1.6),
        arrowprops={"arrowstyle": "-", "color": "#777777", "lw": 0.5},
    )


def first_pass_figure(record: Record) -> Figure:
    """The first-pass estimate (``first_pass`` block; its ``kind`` names the method) against
    exact patching, one point per component or head patched exactly, both as sink change /
    clean sink; the diagonal is perfect agreement, the largest exact effects are labelled."""
    record = DiscoveryRecord.of(record)
    if effect_words(record).readout != "sink" and record.first_pass_exact_pearson is None:
        raise MissingDataError(
            "the first pass was exact patching (a readout with no estimate): nothing to compare"
        )
    estimate = _effects_by_name(record.first_pass)
    exact = record.exact_effects()
    names = [n for n in exact if n in estimate]
    if not names:
        raise MissingDataError("patching.json has no first-pass estimate of an exact patch")
    clean = record.effect_span()
    xs = np.array([exact[n].relative_to(clean) for n in names])
    ys = np.array([estimate[n].relative_to(clean) for n in names])
    kinds = [exact[n].site["kind"] for n in names]
    fig = new_figure(5.2, 4.6)
    ax = fig.subplots()
    lo, hi = float(min(xs.min(), ys.min(), 0.0)), float(max(xs.max(), ys.max(), 0.0))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#9e9e9e", lw=0.8, ls="--")
    for kind in dict.fromkeys(kinds):
        sel = [i for i, k in enumerate(kinds) if k == kind]
        ax.scatter(xs[sel], ys[sel], s=14, color=KIND_COLORS.get(kind, "#444444"), label=kind)
    _label_points(ax, [(names[i], xs[i], ys[i]) for i in np.argsort(-np.abs(xs))[:6]])
    r = record.first_pass_exact_pearson
    method = (record.first_pass.kind if record.first_pass is not None else None) or "first pass"
    what = effect_words(record).axis.replace("\n", " ")
    ax.set_xlabel(f"exact patching: {what}")
    ax.set_ylabel(f"{method}: {what}")
    ax.set_title(
        f"first pass vs exact ({len(names)} patches, Pearson r "
        f"{'n/a' if r is None else f'{r:.3f}'})",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
