"""The report page of a discovery (``patching.json`` and ``circuit.json``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from circuits.circuit.graph import CircuitGraph
from circuits.circuit.record import (
    BackupSearch,
    DiscoveryRecord,
    FaithfulnessCurve,
    PredictionEffect,
    SinkBaseline,
)
from circuits.core.conventions import (
    CIRCUIT_ATTRIBUTION_GRAPH,
    CIRCUIT_DOT,
    CIRCUIT_GRAPHML,
    CIRCUIT_JSON,
    PATCHING_FILE,
)
from circuits.core.records import load_result
from circuits.viz.curve_figure import faithfulness_curve_figure
from circuits.viz.graph_figure import circuit_graph_figure
from circuits.viz.html import esc, fmt, provenance_html, table
from circuits.viz.patching_figures import (
    clean_sink_figure,
    component_heatmap_figure,
    faithfulness_figure,
    first_pass_figure,
    head_patching_heatmap_figure,
    path_figure,
)
from circuits.viz.prediction_figure import prediction_figure
from circuits.viz.style import effect_words
from circuits.viz.view_data import load_view_data
from circuits.viz.views import NO_VIEWS_NOTE, View, p0_norm_view, sink_heads_view, views_section

if TYPE_CHECKING:
    from circuits.viz.files import FigureCollector


# The record figures of a discover page: (figure, file stem or None for inline only, caption).
DRAWINGS: tuple[tuple[Callable[[DiscoveryRecord], Figure], str | None, str], ...] = (
    (
        component_heatmap_figure,
        "patching_components",
        "Layer × component: {axis} when one component's output at P0 is set "
        "to its counterfactual (blue: {blue}); exact patching (bold) for "
        "the components the sweep patched, the first-pass estimate (hatched) elsewhere.",
    ),
    (
        head_patching_heatmap_figure,
        "patching_heads",
        "Layer × head: exact head patching (bold) where the head sweep ran, the first-pass "
        "estimate (hatched) elsewhere.",
    ),
    (clean_sink_figure, None, "Clean sink score per layer (mean over heads and prompts)."),
    (
        path_figure,
        "paths_k",
        "Path patching: sender at P0 -> K input of each later layer (direct path); {path} "
        "(blue: {blue}).",
    ),
    (
        first_pass_figure,
        "first_pass",
        "First pass vs exact patching: each exactly patched component or head, its estimated "
        "against its exact effect (both {axis}); on the dashed diagonal they agree.",
    ),
    (
        faithfulness_figure,
        "faithfulness",
        "Faithfulness per receiver layer: clean, circuit kept (rest patched), circuit patched, "
        "everything patched; and the {readout} kept as the other components are ablated layer "
        "by layer.",
    ),
    (
        faithfulness_curve_figure,
        "faithfulness_curve",
        "Faithfulness curve: f(k) with the first k P0 components of a ranking kept clean and "
        "the rest at the counterfactual, normalised by the clean and all-patched {readout}; CPR "
        "= area under f, CMD = area between f and 1 (MIB; docs/science.md).",
    ),
    (
        prediction_figure,
        "prediction",
        "Does the circuit matter for the model's predictions? Next-token loss increase and "
        "KL to the clean distribution when the circuit is patched, against random sets of as "
        "many P0 components (dots; bar: their mean) and every P0 component patched.",
    ),
)


def discover_page(path: Path, figs: FigureCollector) -> tuple[str, list[str], list[View]]:
    raw = load_result(path, "discover", CIRCUIT_JSON)
    record = DiscoveryRecord.of(raw, str(path / PATCHING_FILE))
    graph = CircuitGraph.load(path / CIRCUIT_JSON) if (path / CIRCUIT_JSON).is_file() else None
    sections = [provenance_html(raw)]
    if record.verdict:
        sections.append(f"<p class=verdict><b>Verdict.</b> {esc(record.verdict)}</p>")
    sections.append(
        "<h2>Summary</h2>" + table(["quantity", "value"], _discover_summary(record), left=2)
    )
    if graph is not None:
        figs.add(
            lambda: circuit_graph_figure(graph, record=record),
            "circuit_graph",
            _caption(
                "The circuit layer by layer, P0's embedding at the bottom; edge width = "
                "|{path}|; blue: {blue}.",
                record,
            ),
        )
    for make, stem, caption in DRAWINGS:
        figs.add(functools.partial(make, record), stem, _caption(caption, record))
    sections.append("<h2>Figures</h2>" + "\n".join(figs.html))
    if graph is not None:
        sections.append(_graph_tables(graph))
    sections.append(_effects_table(record))
    files = [
        f
        for f in (
            CIRCUIT_JSON,
            CIRCUIT_GRAPHML,
            CIRCUIT_DOT,
            CIRCUIT_ATTRIBUTION_GRAPH,
            PATCHING_FILE,
        )
        if (path / f).is_file()
    ]
    sections.append(
        "<p>Data: " + ", ".join(f'<a href="{esc(f)}">{esc(f)}</a>' for f in files) + "</p>"
    )
    data = load_view_data(path)
    views = [sink_heads_view(data), p0_norm_view(data)] if data else []
    sections.append(views_section(views, "" if views else NO_VIEWS_NOTE))
    words = effect_words(record)
    title = "P0 sink circuit" if words.readout == "sink" else f"P0 circuit for the {words.readout}"
    return f"{title}: {record.model or '?'}", sections, views


def _caption(template: str, record: DiscoveryRecord) -> str:
    """A figure's caption in the words of the readout the discovery asked."""
    words = effect_words(record)
    sink = words.readout == "sink"
    return template.format(
        axis=words.axis.replace("\n", " "),
        blue="the " + words.blue,
        readout="sinks" if sink else words.readout,
        path="sink change at that layer / the clean sink of all receivers"
        if sink
        else words.axis.replace("\n", " "),
    )


def _baseline_rows(base: SinkBaseline | None) -> list[tuple[str, str]]:
    if base is None:
        return []
    verdict = "a sink" if base.present else "<b>no sink</b> (below 2x uniform attention)"
    return [
        (
            "clean sink / uniform attention's sink score",
            f"{fmt(base.clean_over_uniform, '.2f')}x of {fmt(base.uniform_attention_sink, '.3f')}: {verdict}",
        )
    ]


def _curve_rows(curve: FaithfulnessCurve | None) -> list[tuple[str, str]]:
    if curve is None:
        return []
    labels = {"exact": "exact effects", "first_pass": "first pass", "random_mean": "random (mean)"}
    return [
        (
            f"faithfulness curve, {label}: CPR / CMD",
            f"{fmt(curve.summary[key].cpr, '.3f')} / {fmt(curve.summary[key].cmd, '.3f')}",
        )
        for key, label in labels.items()
        if key in curve.summary
    ]


def _prediction_rows(pred: PredictionEffect | None) -> list[tuple[str, str]]:
    if pred is None:
        return []
    rand = pred.random
    return [
        (
            "circuit patched: next-token loss increase / KL (nats)",
            f"{fmt(pred.circuit.loss_increase, '.4f')} / {fmt(pred.circuit.kl, '.4f')}",
        ),
        (
            f"{rand.n_sets} random sets of {rand.size} P0 components: mean loss increase / "
            "mean KL (max KL)",
            f"{fmt(rand.loss_increase_mean, '.4f')} / {fmt(rand.kl_mean, '.4f')} "
            f"({fmt(rand.kl_max, '.4f')})",
        ),
        (
            "every P0 component patched: loss increase / KL",
            f"{fmt(pred.all_p0.loss_increase, '.4f')} / {fmt(pred.all_p0.kl, '.4f')}",
        ),
    ]


def _discover_summary(record: DiscoveryRecord) -> list[list[str]]:
    faith = record.faithfulness
    metric = record.metric or {}
    first_kind = record.first_pass.kind if record.first_pass is not None else None
    rows = [
        ("circuit", esc(", ".join(record.circuit or [])) or "(empty)"),
        ("faithfulness_kept (only the circuit clean)", fmt(faith and faith.kept)),
        ("faithfulness_ablated (the circuit patched)", fmt(faith and faith.ablated)),
        ("every P0 component patched", fmt(faith and faith.floor)),
        *_backup_rows(record.backups),
        *_curve_rows(record.faithfulness_curve),
        *_prediction_rows(record.prediction),
        *_readout_rows(record),
        ("clean sink", fmt(record.clean and record.clean.sink, ".4f")),
        *_baseline_rows(record.sink_baseline),
        ("metric", esc(str(metric.get("definition", metric)))),
        ("receiver layers", esc(_span(record.receiver_layers))),
        (
            "counterfactual",
            f"<b>{esc(str(record.counterfactual))}</b>: "
            f"{esc(str(record.counterfactual_definition or ''))}",
        ),
        (
            "prompts",
            f"{record.n_prompts or '?'} × {record.n_tokens or '?'} tokens, "
            f"BOS at P0: {esc(str(record.bos))}",
        ),
        (
            f"first pass ({esc(str(first_kind or '?'))}) vs exact patching (Pearson r)",
            fmt(record.first_pass_exact_pearson),
        ),
        (
            "additivity: sum of single effects / joint effect (1 additive, >1 AND, <1 OR)",
            fmt(record.additivity and record.additivity.ratio),
        ),
        ("matches the paper's predicted shape", esc(str(record.paper_prediction_shape))),
    ]
    timings = record.timings_s or {}
    if timings:
        rows.append(("timings", esc(", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))))
    return [[k, v] for k, v in rows]


def _readout_rows(record: DiscoveryRecord) -> list[tuple[str, str]]:
    """What the circuit is for, when it is not the sink: the readout, clean and with every P0
    component patched (the span its effects are shares of)."""
    ro = record.readout
    if ro is None or ro.spec == "sink":
        return []
    return [
        ("readout (what the circuit is for)", f"<b>{esc(ro.spec)}</b>: {esc(ro.definition)}"),
        (f"clean {esc(ro.label)}", fmt(ro.clean, ".4f")),
        (f"{esc(ro.label)} with every P0 component patched", fmt(ro.reference, ".4f")),
    ]


def _effects_table(record: DiscoveryRecord) -> str:
    clean = record.effect_span()
    rows = [
        [
            esc(r.name),
            fmt(r.value, ".4f"),
            fmt(r.effect, "+.4f"),
            fmt(r.relative_to(clean) if clean or r.relative is not None else None, "+.1%"),
        ]
        for r in record.exact_effects().values()
    ]
    if not rows:
        return ""
    return (
        f"<details><summary>Every exact patching effect at P0 ({len(rows)} rows)</summary>"
        + table(["patched at P0", effect_words(record).readout, "effect", "relative"], rows)
        + "</details>"
    )


def _span(layers: Any) -> str:
    if not layers:
        return "?"
    if (
        isinstance(layers, list)
        and layers == list(range(layers[0], layers[-1] + 1))
        and len(layers) > 2
    ):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(str(x) for x in layers) if isinstance(layers, list) else str(layers)


def _backup_rows(backups: BackupSearch | None) -> list[tuple[str, str]]:
    """Rows for the sufficiency search (discover step 5), when it ran."""
    if backups is None or not backups.steps:
        return []
    core = backups.core_faithfulness
    return [
        (
            "backups (sufficiency search)",
            esc(", ".join(backups.nodes or [])) or "(none found)",
        ),
        ("core circuit kept / ablated", f"{fmt(core.kept)} / {fmt(core.ablated)}"),
    ]


def _graph_tables(graph) -> str:
    g = graph.g
    nodes = sorted(g.nodes(data=True), key=lambda nd: (nd[1].get("layer", 0), nd[0]))
    node_rows = [
        [
            esc(n),
            esc(str(d.get("kind"))),
            fmt(d.get("layer"), "d"),
            fmt(d.get("head"), "d"),
            fmt(d.get("effect"), "+.4f"),
            fmt(d.get("relative"), "+.1%"),
            fmt(d.get("first_pass"), "+.4f"),
        ]
        for n, d in nodes
    ]
    edge_rows = [
        [
            esc(u),
            esc(v),
            esc(str(d.get("path_type"))),
            fmt(d.get("effect"), "+.4f"),
            fmt(d.get("relative"), "+.1%"),
        ]
        for u, v, d in sorted(g.edges(data=True), key=lambda x: -abs(x[2].get("relative") or 0))
    ]
    return (
        f"<h2>Circuit graph: {len(node_rows)} nodes, {len(edge_rows)} edges</h2>"
        + table(
            ["node", "kind", "layer", "head", "effect", "relative", "first-pass estimate"],
            node_rows,
        )
        + (
            "<h3>Edges (path patching)</h3>"
            + table(["sender", "receiver", "path", "effect", "relative"], edge_rows, left=3)
            if edge_rows
            else "<p>No edge passed the threshold.</p>"
        )
    )
