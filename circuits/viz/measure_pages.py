"""Report pages of measurements: one run (``measure_page``) and runs side by side
(``compare_page``). Each returns (title, sections of HTML, circuitsvis views)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuits.core.conventions import REPORT_FILE
from circuits.core.records import load_measure, measure_subdirs
from circuits.viz.html import esc, fmt, provenance_html, table
from circuits.viz.moe_figures import routing_figure
from circuits.viz.sink_figures import (
    bos_comparison_figure,
    head_heatmap_figure,
    layer_profile_figure,
    recognition_figure,
)
from circuits.viz.view_data import load_view_data
from circuits.viz.views import (
    NO_VIEWS_NOTE,
    View,
    p0_norm_view,
    recognition_view,
    sink_heads_view,
    views_section,
)

if TYPE_CHECKING:
    from circuits.viz.files import FigureCollector


def _measure_summary(m: dict[str, Any]) -> list[list[str]]:
    top = max(m["layers"], key=lambda r: r["p0_norm"])
    embed = m.get("embed") or {}
    rows = [
        ("tokens measured (in text)", f"{m.get('n_tokens')} ({m.get('n_tokens_in_text', '?')})"),
        ("BOS at position 0", str(m.get("bos"))),
        ("first token", esc(repr((m.get("tokens") or ["?"])[0]))),
        ("sink rate, all layers (Sink₀^ε)", fmt(m.get("sink_rate_all_layers"), ".1%")),
        ("sink rate, layers ≥ 2 (Sink₀^ε[2:])", fmt(m.get("sink_rate_from_layer2"), ".1%")),
        ("ε", fmt(m.get("eps"), "g")),
        (
            "× P0 outgrows the rest in blocks 0–1 (norm ratio after block 1 / embedding)",
            fmt(m.get("p0_norm_growth_first_two_blocks"), ".1f"),
        ),
        (
            "share of P0's excess norm growth in blocks 0–1",
            fmt(m.get("norm_growth_share_l01"), ".0%"),
        ),
        ("largest single P0 norm jump at block", fmt(m.get("largest_norm_jump_layer"), "d")),
        ("first layer with P0/rest norm > 10", fmt(m.get("first_layer_norm_ratio_over_10"), "d")),
        (
            "largest P0 norm",
            f"{top['p0_norm']:,.0f} at layer {top['layer']} ({top['p0_norm_ratio']:.1f}× the rest)",
        ),
        (
            "embedding norm, P0 / rest",
            f"{fmt(embed.get('p0_norm'), '.2f')} / {fmt(embed.get('rest_norm_median'), '.2f')}",
        ),
        ("massive activations found", str(len(m.get("massive_activations") or []))),
    ]
    return [[k, v] for k, v in rows]


def _layer_table(m: dict[str, Any]) -> str:
    header = [
        "layer",
        "attn_to_p0",
        "sink score",
        "sink rate",
        "P0 norm",
        "rest median",
        "P0/rest",
        "P0 cosine",
    ]
    rows = [
        [
            str(r["layer"]),
            fmt(r["attn_to_p0"]),
            fmt(r["sink_score"]),
            fmt(r["sink_rate"], ".2f"),
            f"{r['p0_norm']:,.1f}",
            f"{r['rest_norm_median']:,.1f}",
            fmt(r.get("p0_norm_ratio"), ".1f"),
            fmt(r.get("p0_cosine")),
        ]
        for r in m["layers"]
    ]
    return "<h2>Per layer</h2>" + table(header, rows)


def _massive_table(m: dict[str, Any]) -> str:
    massive = sorted(m.get("massive_activations") or [], key=lambda r: -abs(r["value"]))[:20]
    if not massive:
        return ""
    rows = [
        [
            str(r["layer"]),
            str(r["position"]),
            str(r["dimension"]),
            f"{r['value']:,.1f}",
            f"{r['ratio_to_median']:,.0f}",
        ]
        for r in massive
    ]
    return "<h2>Massive activations (largest 20)</h2>" + table(
        ["layer", "position", "dimension", "value", "× median"], rows
    )


def measure_page(path: Path, figs: FigureCollector) -> tuple[str, list[str], list[View]]:
    m = load_measure(path)
    bos = "with BOS" if m.get("bos") else "no BOS"
    title = f"P0 attention sink: {m.get('model', '?')} ({bos}, {m.get('n_tokens', '?')} tokens)"
    sections = [
        provenance_html(m),
        "<h2>Summary</h2>" + table(["quantity", "value"], _measure_summary(m), left=2),
    ]
    figs.add(
        lambda: layer_profile_figure(m),
        None,
        "Per layer: attention to P0 (queries ≥ 1), Gu et al.'s sink score and sink rate; "
        "P0 vs median residual norm (log).",
    )
    figs.add(
        lambda: head_heatmap_figure(m),
        "sink_heads",
        "Attention to P0 of every head (mean over queries q ≥ 1).",
    )
    figs.add(
        lambda: recognition_figure(m),
        "recognition",
        "Layer 0: Σᵢ pᵢ² per query (1 at P0) and attention-output norm per position.",
    )
    if m.get("routing"):  # a mixture-of-experts model
        figs.add(
            lambda: routing_figure(m),
            "routing",
            "Per MoE block: the router's mean probability of each expert at P0 (red) and at "
            "positions ≥ 1 (grey), before top-k; the title names P0's most likely expert.",
        )
    sections += ["<h2>Figures</h2>" + "\n".join(figs.html), _layer_table(m), _massive_table(m)]
    views = [v for v in [recognition_view(m)] if v is not None]
    data = load_view_data(path)
    if data is not None:
        views = [sink_heads_view(data), p0_norm_view(data)] + views
    note = "" if data else f"<p class=caption>{esc(NO_VIEWS_NOTE)}</p>"
    sections.append(views_section(views) + note)
    return title, sections, views


def compare_page(path: Path, figs: FigureCollector) -> tuple[str, list[str], list[View]]:
    subdirs = measure_subdirs(path)
    runs = [load_measure(d) for d in subdirs]
    models = sorted({str(m.get("model")) for m in runs})
    title = f"P0 sink side by side: {', '.join(models)} ({', '.join(d.name for d in subdirs)})"
    labels = [f"{d.name}: {_run_label_short(m)}" for d, m in zip(subdirs, runs, strict=True)]
    figs.add(
        lambda: bos_comparison_figure(runs, labels),
        "sink_comparison",
        "One column per run: attention to P0 and sink score per layer (top), P0 vs rest "
        "residual norm (bottom, log).",
    )
    rows = []
    for d, m in zip(subdirs, runs, strict=True):
        top = max(m["layers"], key=lambda r: r["p0_norm"])
        link = (
            f'<a href="{esc(d.name)}/report.html">{esc(d.name)}</a>'
            if (d / REPORT_FILE).is_file()
            else esc(d.name)
        )
        rows.append(
            [
                link,
                esc(str(m.get("model"))),
                str(m.get("bos")),
                str(m.get("n_tokens")),
                esc(repr((m.get("tokens") or ["?"])[0])),
                fmt(max(r["attn_to_p0"] for r in m["layers"])),
                fmt(m.get("sink_rate_from_layer2"), ".1%"),
                f"{top['p0_norm']:,.0f} (L{top['layer']})",
                fmt(max(r["p0_norm_ratio"] for r in m["layers"]), ".1f"),
                fmt(m.get("first_layer_norm_ratio_over_10"), "d"),
            ]
        )
    sections = [
        "<h2>Summary</h2>"
        + table(
            [
                "run",
                "model",
                "BOS",
                "tokens",
                "P0 token",
                "max attn_to_p0",
                "Sink₀[2:]",
                "max P0 norm",
                "max P0/rest",
                "first ratio > 10",
            ],
            rows,
            left=2,
        ),
        "<h2>Figures</h2>" + "\n".join(figs.html),
    ]
    for d, m in zip(subdirs, runs, strict=True):
        sections.append(f"<p class=caption>{esc(d.name)}: {provenance_html(m)}</p>")
    views = [v for v in (recognition_view(m, max_tokens=24) for m in runs) if v is not None]
    for d, v in zip(subdirs, views, strict=False):
        v.title = f"{d.name}: {v.title}"
    sections.append(views_section(views))
    return title, sections, views


def _run_label_short(m: dict[str, Any]) -> str:
    return f"{m.get('model', '?')}, {'BOS' if m.get('bos') else 'no BOS'}, {m.get('n_tokens', '?')} tok"
