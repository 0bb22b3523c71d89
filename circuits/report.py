"""``report.html``: one self-contained page per result directory, rebuilt from its JSON alone.

Three kinds of directory are recognised (:func:`detect_kind`):

* ``measure``: holds ``sink_metrics.json`` (from ``p0-circuits measure``);
* ``discover``: holds ``patching.json`` and/or ``circuit.json`` (from ``p0-circuits discover``);
* ``compare``: holds no JSON itself but sub-directories that hold ``sink_metrics.json`` (e.g.
  ``results/gemma3-270m/measure/{bos,no-bos}``): BOS vs no-BOS side by side.

The page embeds everything (figures as SVG data URIs, the circuitsvis bundle inlined once,
tables of the numbers): it opens offline and can be mailed as one file. The static figures are
also written next to it as PNG + SVG. ``views.json`` (see :mod:`circuits.views`), when present,
adds the attention patterns of the sink heads and the per-token residual norms; with a loaded
model, :func:`build_report` computes it from the saved tokens first (one forward pass).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from circuits import discover_figures
from circuits import views as V
from circuits.errors import UsageError
from circuits.io import write_text
from circuits.render import (
    bos_comparison_figure,
    circuit_graph_figure,
    component_heatmap_figure,
    head_heatmap_figure,
    head_patching_heatmap_figure,
    layer_profile_figure,
    plt,
    recognition_figure,
    save_figure,
)

MEASURE_FILE = "sink_metrics.json"
PATCHING_FILE = "patching.json"
CIRCUIT_FILES = ("circuit.json", "circuit.graphml")
REPORT_FILE = "report.html"
e = html.escape


# ---------------------------------------------------------------------------------------------
# Reading a directory
# ---------------------------------------------------------------------------------------------


def _measure_subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and (p / MEASURE_FILE).is_file())


def detect_kind(out_dir: str | os.PathLike) -> str:
    """``measure``, ``discover`` or ``compare``; a one-line ``UsageError`` otherwise."""
    path = Path(out_dir)
    if not path.is_dir():
        raise UsageError(
            f"{path} is not a directory; give a directory written by measure or discover"
        )
    if (path / PATCHING_FILE).is_file() or any((path / f).is_file() for f in CIRCUIT_FILES):
        return "discover"
    if (path / MEASURE_FILE).is_file():
        return "measure"
    if _measure_subdirs(path):
        return "compare"
    raise UsageError(
        f"{path} holds no recognised result ({MEASURE_FILE}, {PATCHING_FILE} or circuit.json, "
        f"nor sub-directories with {MEASURE_FILE}); run p0-circuits measure or discover first"
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}); rerun the command that wrote it"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} does not hold a JSON object; rerun the command that wrote it")
    return data


def _load_measure(path: Path) -> dict[str, Any]:
    data = read_json(path / MEASURE_FILE)
    if not isinstance(data.get("layers"), list) or not data["layers"]:
        raise UsageError(
            f"{path / MEASURE_FILE} has no per-layer numbers (layers); rerun p0-circuits measure"
        )
    return data


def _load_graph(path: Path):
    from circuits.graph import CircuitGraph

    for name in CIRCUIT_FILES:
        if (path / name).is_file():
            return CircuitGraph.load(path / name)
    return None


# ---------------------------------------------------------------------------------------------
# Page pieces
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee} th{background:#f0f0f0}
td.l,th.l{text-align:left} figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555} .verdict{background:#f6f8fa;border-left:4px solid #1f77b4;padding:.6em 1em}
code{background:#f3f3f3;padding:0 3px} .caption{font-size:.85em;color:#555} details{margin:.5em 0}
.p0-view{border:1px solid #eee;padding:4px;min-height:40px}
"""


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            return str(value)
    return e(str(value))


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    head = "".join(f"<th{' class=l' if i < left else ''}>{e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=l' if i < left else ''}>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class _Figures:
    """Collects figures: writes PNG + SVG next to the report and embeds the SVG in the page."""

    def __init__(self, out_dir: Path, write_files: bool) -> None:
        self.out_dir, self.write_files = out_dir, write_files
        self.written: list[Path] = []
        self.html: list[str] = []

    def add(self, make: Callable[[], Any], stem: str | None, caption: str) -> None:
        try:
            fig = make()
        except (UsageError, KeyError, ValueError, TypeError, IndexError) as err:
            self.html.append(
                f"<p class=caption>({e(caption.split(':')[0])}: not available: {e(str(err))})</p>"
            )
            plt.close("all")
            return
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", bbox_inches="tight")
        if stem and self.write_files:
            self.written += save_figure(fig, self.out_dir / stem)
        else:
            plt.close(fig)
        self.html.append(_img(buf.getvalue(), "image/svg+xml", stem or "figure", caption))

    def add_png_file(self, path: Path, caption: str) -> None:
        self.html.append(_img(path.read_bytes(), "image/png", path.stem, caption))


def _img(data: bytes, mime: str, alt: str, caption: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img alt="{e(alt)}" src="data:{mime};base64,{b64}">'
        f"<figcaption>{e(caption)}</figcaption></figure>"
    )


def command_line(command: str, args: dict[str, Any] | None) -> str:
    """The ``p0-circuits`` command line that reproduces a result, from its saved ``args``:
    options whose value differs from the command's default (``--out`` always)."""
    if not args:
        return f"p0-circuits {command}"
    from circuits.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices.get(command)
    if sub is None:
        return f"p0-circuits {command}"
    parts = [f"p0-circuits {command}"]
    seen: set[str] = set()
    for action in sub._actions:
        dest = action.dest
        if dest in ("help", "quiet") or dest not in args or dest in seen:
            continue
        value = args[dest]
        if not action.option_strings:  # positional
            vals = value if isinstance(value, list) else [value]
            parts += [_shell(str(v)) for v in vals]
            seen.add(dest)
            continue
        if value == action.default and dest not in ("out", "model"):
            continue
        if action.nargs == 0:  # store_true / store_false / the --bos/--no-bos pair
            matching = [
                a for a in sub._actions if a.dest == dest and a.nargs == 0 and a.const == value
            ]
            if matching:
                parts.append(matching[0].option_strings[0])
                seen.add(dest)
            continue
        if value is None:
            continue
        parts += [action.option_strings[0], _shell(str(value))]
        seen.add(dest)
    return " ".join(parts)


def _shell(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _provenance_html(data: dict[str, Any], command: str) -> str:
    prov = data.get("provenance") or data
    args = prov.get("args")
    versions = prov.get("versions") or {}
    cmd = command_line(command, args) if args else None
    vers = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")
    out = []
    if cmd:
        out.append(f"<p>Made by <code>{e(cmd)}</code></p>")
    if vers:
        out.append(f"<p class=caption>seed {e(str(prov.get('seed')))}; {e(vers)}</p>")
    return "\n".join(out)


def _page(title: str, sections: list[str], views: list[V.View]) -> str:
    bundle = f"<script>\n{V.bundle_js()}\n</script>\n" if views else ""
    return (
        '<!doctype html>\n<html lang=en><head><meta charset="utf-8">\n'
        f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n{bundle}</head><body>\n"
        f"<h1>{e(title)}</h1>\n"
        + "\n".join(s for s in sections if s)
        + "\n<p class=caption>Written by p0-circuits render; rebuild with "
        "<code>p0-circuits render DIR</code>. Self-contained: no network access needed.</p>\n"
        "</body></html>\n"
    )


def _views_section(views: list[V.View], note: str = "") -> str:
    if not views:
        return f"<h2>Interactive views</h2><p class=caption>{e(note)}</p>" if note else ""
    parts = ["<h2>Interactive views (circuitsvis)</h2>"]
    for v in views:
        parts.append(f"<h3>{e(v.title)}</h3>")
        if v.caption:
            parts.append(f"<p class=caption>{e(v.caption)}</p>")
        parts.append(v.fragment())
    return "\n".join(parts)


_NO_VIEWS = (
    "No views.json here: run `p0-circuits render DIR --views` (one forward pass of the "
    "model named in the JSON) to add the attention patterns of the sink heads."
)


# ---------------------------------------------------------------------------------------------
# The three reports
# ---------------------------------------------------------------------------------------------


def _measure_page(path: Path, figs: _Figures) -> tuple[str, list[str], list[V.View]]:
    m = _load_measure(path)
    bos = "with BOS" if m.get("bos") else "no BOS"
    title = f"P0 attention sink: {m.get('model', '?')} ({bos}, {m.get('n_tokens', '?')} tokens)"
    layers = m["layers"]
    top = max(layers, key=lambda r: r["p0_norm"])
    summary = [
        ("tokens measured (in text)", f"{m.get('n_tokens')} ({m.get('n_tokens_in_text', '?')})"),
        ("BOS at position 0", str(m.get("bos"))),
        ("first token", e(repr((m.get("tokens") or ["?"])[0]))),
        ("sink rate, all layers (Sink₀^ε)", _fmt(m.get("sink_rate_all_layers"), ".1%")),
        ("sink rate, layers ≥ 2 (Sink₀^ε[2:])", _fmt(m.get("sink_rate_from_layer2"), ".1%")),
        ("ε", _fmt(m.get("eps"), "g")),
        ("first layer with P0/rest norm > 10", _fmt(m.get("first_layer_norm_ratio_over_10"), "d")),
        (
            "largest P0 norm",
            f"{top['p0_norm']:,.0f} at layer {top['layer']} ({top['p0_norm_ratio']:.1f}× the rest)",
        ),
        (
            "embedding norm, P0 / rest",
            f"{_fmt((m.get('embed') or {}).get('p0_norm'), '.2f')} / "
            f"{_fmt((m.get('embed') or {}).get('rest_norm_median'), '.2f')}",
        ),
        ("massive activations found", str(len(m.get("massive_activations") or []))),
    ]
    sections = [
        _provenance_html(m, "measure"),
        "<h2>Summary</h2>" + _table(["quantity", "value"], [[k, v] for k, v in summary], left=2),
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
    sections.append("<h2>Figures</h2>" + "\n".join(figs.html))
    rows = [
        [
            str(r["layer"]),
            _fmt(r["attn_to_p0"]),
            _fmt(r["sink_score"]),
            _fmt(r["sink_rate"], ".2f"),
            f"{r['p0_norm']:,.1f}",
            f"{r['rest_norm_median']:,.1f}",
            _fmt(r.get("p0_norm_ratio"), ".1f"),
            _fmt(r.get("p0_cosine")),
        ]
        for r in layers
    ]
    sections.append(
        "<h2>Per layer</h2>"
        + _table(
            [
                "layer",
                "attn_to_p0",
                "sink score",
                "sink rate",
                "P0 norm",
                "rest median",
                "P0/rest",
                "P0 cosine",
            ],
            rows,
        )
    )
    massive = sorted(m.get("massive_activations") or [], key=lambda r: -abs(r["value"]))[:20]
    if massive:
        sections.append(
            "<h2>Massive activations (largest 20)</h2>"
            + _table(
                ["layer", "position", "dimension", "value", "× median"],
                [
                    [
                        str(r["layer"]),
                        str(r["position"]),
                        str(r["dimension"]),
                        f"{r['value']:,.1f}",
                        f"{r['ratio_to_median']:,.0f}",
                    ]
                    for r in massive
                ],
            )
        )
    views = [v for v in [V.recognition_view(m)] if v is not None]
    data = V.load_view_data(path)
    if data is not None:
        views = [V.sink_heads_view(data), V.p0_norm_view(data)] + views
    sections.append(
        _views_section(views) + ("" if data else f"<p class=caption>{e(_NO_VIEWS)}</p>")
    )
    return title, sections, views


def _discover_page(path: Path, figs: _Figures) -> tuple[str, list[str], list[V.View]]:
    record = read_json(path / PATCHING_FILE) if (path / PATCHING_FILE).is_file() else None
    graph = _load_graph(path)
    attrs = graph.graph_attrs if graph is not None else {}
    src = record or attrs
    model = src.get("model", "?")
    title = f"P0 sink circuit: {model}"
    sections = [_provenance_html(src, "discover")]
    verdict = src.get("verdict")
    if verdict:
        sections.append(f"<p class=verdict><b>Verdict.</b> {e(verdict)}</p>")
    faith = (record or {}).get("faithfulness") or {}
    kept = faith.get("kept", attrs.get("faithfulness_kept"))
    ablated = faith.get("ablated", attrs.get("faithfulness_ablated"))
    floor = faith.get("floor", attrs.get("faithfulness_floor"))
    metric = src.get("metric") or {}
    summary = [
        ("circuit", e(", ".join(src.get("circuit") or [])) or "(empty)"),
        ("faithfulness_kept (only the circuit clean)", _fmt(kept)),
        ("faithfulness_ablated (the circuit patched)", _fmt(ablated)),
        ("every P0 component patched", _fmt(floor)),
        *_backup_rows((record or {}).get("backups")),
        (
            "clean sink",
            _fmt((record or {}).get("clean", {}).get("sink", attrs.get("clean_sink")), ".4f"),
        ),
        (
            "metric",
            e(metric.get("definition", str(metric)) if isinstance(metric, dict) else str(metric)),
        ),
        ("receiver layers", e(_span(src.get("receiver_layers")))),
        (
            "counterfactual",
            f"<b>{e(str(src.get('counterfactual')))}</b>: {e(str(src.get('counterfactual_definition', '')))}",
        ),
        (
            "prompts",
            f"{src.get('n_prompts', '?')} × {src.get('n_tokens', '?')} tokens, BOS at P0: {e(str(src.get('bos')))}",
        ),
        ("attribution vs exact patching (Pearson r)", _fmt(src.get("attribution_exact_pearson"))),
        ("matches PAPER.md's predicted shape", e(str(src.get("paper_prediction_shape")))),
    ]
    timings = (record or {}).get("timings_s") or {}
    if timings:
        summary.append(("timings", e(", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))))
    sections.append(
        "<h2>Summary</h2>" + _table(["quantity", "value"], [[k, v] for k, v in summary], left=2)
    )
    if graph is not None:
        figs.add(
            lambda: circuit_graph_figure(graph),
            "circuit_graph",
            "The circuit layer by layer, P0's embedding at the bottom; edge width = |sink "
            "change| / clean sink of the path's receiver; blue: patching the path lowers the sink.",
        )
    if record is not None:
        figs.add(
            lambda: component_heatmap_figure(record),
            "patching_components",
            "Layer × component: sink change / clean sink when one component's output at P0 "
            "is set to its counterfactual.",
        )
        figs.add(
            lambda: head_patching_heatmap_figure(record),
            "patching_heads",
            "Layer × head: exact head patching (bold) where the head sweep ran, the "
            "attribution estimate (hatched) elsewhere.",
        )
        if record.get("clean_sink_all_layers"):
            figs.add(
                lambda: _clean_sink_figure(record),
                None,
                "Clean sink score per layer (mean over heads and prompts).",
            )
        _path_and_faithfulness_figures(record, figs)
    sections.append("<h2>Figures</h2>" + "\n".join(figs.html))
    if graph is not None:
        sections.append(_graph_tables(graph))
    if record is not None:
        sections.append(_effects_table(record))
    files = [
        f
        for f in ("circuit.json", "circuit.graphml", "circuit.dot", PATCHING_FILE)
        if (path / f).is_file()
    ]
    if files:
        sections.append(
            "<p>Data: " + ", ".join(f'<a href="{e(f)}">{e(f)}</a>' for f in files) + "</p>"
        )
    data = V.load_view_data(path)
    views = [V.sink_heads_view(data), V.p0_norm_view(data)] if data else []
    sections.append(_views_section(views, "" if views else _NO_VIEWS))
    return title, sections, views


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


def _clean_sink_figure(record: dict[str, Any]):
    vals = record["clean_sink_all_layers"]
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.plot(range(len(vals)), vals, "o-", ms=3, color="black")
    rec = record.get("receiver_layers") or []
    if rec:
        ax.axvspan(
            min(rec) - 0.5, max(rec) + 0.5, color="#1f77b4", alpha=0.08, label="receiver layers"
        )
        ax.legend(fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("sink score")
    ax.set_title("clean sink per layer", fontsize=9)
    fig.tight_layout()
    return fig


def _backup_rows(backups: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Rows for the sufficiency search (discover step 5), when it ran."""
    if not backups or not backups.get("steps"):
        return []
    core = backups.get("core_faithfulness") or {}
    return [
        ("backups (sufficiency search)", e(", ".join(backups.get("nodes") or [])) or "(none found)"),
        ("core circuit kept / ablated", f"{_fmt(core.get('kept'))} / {_fmt(core.get('ablated'))}"),
    ]


def _path_and_faithfulness_figures(record: dict[str, Any], figs: _Figures) -> None:
    """The PNG figures of ``circuits.discover_figures``: drawn into the result directory (or a
    temporary one when figures are not written) and embedded."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = figs.out_dir if figs.write_files else Path(tmp)
        for draw, name, caption in (
            (
                discover_figures.path_figure,
                "paths_k.png",
                "Path patching: sender at P0 -> K input of each later "
                "layer (direct path); sink change at that layer / its clean sink.",
            ),
            (
                discover_figures.faithfulness_figure,
                "faithfulness.png",
                "Faithfulness per receiver layer: clean, "
                "circuit kept (rest patched), circuit patched, everything patched.",
            ),
        ):
            try:
                made = draw(record, folder / name)
            except (KeyError, ValueError, TypeError, IndexError, ZeroDivisionError):
                plt.close("all")
                continue
            if made is not None:
                if figs.write_files:
                    figs.written.append(Path(made))
                figs.add_png_file(Path(made), caption)


def _graph_tables(graph) -> str:
    g = graph.g
    nodes = sorted(g.nodes(data=True), key=lambda nd: (nd[1].get("layer", 0), nd[0]))
    node_rows = [
        [
            e(n),
            e(str(d.get("kind"))),
            _fmt(d.get("layer"), "d"),
            _fmt(d.get("head"), "d"),
            _fmt(d.get("effect"), "+.4f"),
            _fmt(d.get("relative"), "+.1%"),
            _fmt(d.get("attribution"), "+.4f"),
        ]
        for n, d in nodes
    ]
    edge_rows = [
        [
            e(u),
            e(v),
            e(str(d.get("path_type"))),
            _fmt(d.get("effect"), "+.4f"),
            _fmt(d.get("relative"), "+.1%"),
        ]
        for u, v, d in sorted(g.edges(data=True), key=lambda x: -abs(x[2].get("relative") or 0))
    ]
    return (
        f"<h2>Circuit graph: {len(node_rows)} nodes, {len(edge_rows)} edges</h2>"
        + _table(["node", "kind", "layer", "head", "effect", "relative", "attribution"], node_rows)
        + (
            "<h3>Edges (path patching)</h3>"
            + _table(["sender", "receiver", "path", "effect", "relative"], edge_rows, left=3)
            if edge_rows
            else "<p>No edge passed the threshold.</p>"
        )
    )


def _effects_table(record: dict[str, Any]) -> str:
    clean = float(record["clean"]["sink"])
    rows = []
    for block in ("components", "heads"):
        for r in (record.get(block) or {}).get("effects", []):
            rel = r.get("relative")
            rel = r["effect"] / clean if rel is None and clean else rel
            rows.append(
                [
                    e(r["name"]),
                    _fmt(r.get("value"), ".4f"),
                    _fmt(r["effect"], "+.4f"),
                    _fmt(rel, "+.1%"),
                ]
            )
    if not rows:
        return ""
    return (
        "<details><summary>Every exact patching effect at P0 "
        f"({len(rows)} rows)</summary>"
        + _table(["patched at P0", "sink", "effect", "relative"], rows)
        + "</details>"
    )


def _compare_page(path: Path, figs: _Figures) -> tuple[str, list[str], list[V.View]]:
    subdirs = _measure_subdirs(path)
    runs = [_load_measure(d) for d in subdirs]
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
            f'<a href="{e(d.name)}/report.html">{e(d.name)}</a>'
            if (d / REPORT_FILE).is_file()
            else e(d.name)
        )
        rows.append(
            [
                link,
                e(str(m.get("model"))),
                str(m.get("bos")),
                str(m.get("n_tokens")),
                e(repr((m.get("tokens") or ["?"])[0])),
                _fmt(max(r["attn_to_p0"] for r in m["layers"])),
                _fmt(m.get("sink_rate_from_layer2"), ".1%"),
                f"{top['p0_norm']:,.0f} (L{top['layer']})",
                _fmt(max(r["p0_norm_ratio"] for r in m["layers"]), ".1f"),
                _fmt(m.get("first_layer_norm_ratio_over_10"), "d"),
            ]
        )
    sections = [
        "<h2>Summary</h2>"
        + _table(
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
        sections.append(f"<p class=caption>{e(d.name)}: {_provenance_html(m, 'measure')}</p>")
    views = [v for v in (V.recognition_view(m, max_tokens=24) for m in runs) if v is not None]
    for d, v in zip(subdirs, views, strict=False):
        v.title = f"{d.name}: {v.title}"
    sections.append(_views_section(views))
    return title, sections, views


def _run_label_short(m: dict[str, Any]) -> str:
    return f"{m.get('model', '?')}, {'BOS' if m.get('bos') else 'no BOS'}, {m.get('n_tokens', '?')} tok"


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def build_report(
    out_dir: str | os.PathLike,
    *,
    zm=None,
    write_figures: bool = True,
    top_k: int = 6,
    view_tokens: int = 32,
) -> Path:
    """Write ``out_dir/report.html`` (atomically) from the JSON in ``out_dir``; return its path.

    ``zm`` (a loaded ``ZooModel`` of the model that made the result): compute ``views.json``
    first from the saved tokens (one forward pass), so the page holds the sink heads' attention
    patterns. Without it, an existing ``views.json`` is used and the model is never run.
    ``write_figures``: also write the static figures next to the report as PNG + SVG.
    """
    path = Path(out_dir)
    kind = detect_kind(path)
    if zm is not None and kind != "compare":
        write_views(path, zm, top_k=top_k, view_tokens=view_tokens)
    figs = _Figures(path, write_figures)
    title, sections, views = {
        "measure": _measure_page,
        "discover": _discover_page,
        "compare": _compare_page,
    }[kind](path, figs)
    return write_text(path / REPORT_FILE, _page(title, sections, views))


def saved_prompt(out_dir: str | os.PathLike, zm) -> tuple[Any, bool]:
    """The first prompt of a result directory as token ids ``[1, pos]`` and its BOS flag,
    re-tokenized from the saved arguments (measure) or read from ``patching.json`` (discover)."""
    import torch

    path = Path(out_dir)
    kind = detect_kind(path)
    if kind == "discover":
        record = read_json(path / PATCHING_FILE) if (path / PATCHING_FILE).is_file() else {}
        if not record.get("tokens"):
            raise UsageError(
                f"{path / PATCHING_FILE} holds no prompt tokens; rerun p0-circuits discover"
            )
        return torch.tensor([record["tokens"][0]], dtype=torch.long), bool(record.get("bos"))
    if kind != "measure":
        raise UsageError(f"{path} holds several runs; compute views in each sub-directory")
    from circuits.prompts import read_text

    m = _load_measure(path)
    args = m.get("args") or {}
    bos = bool(m.get("bos"))
    ids = zm.encode(read_text(args.get("text")), bos=bos)[:, : m.get("n_tokens")]
    saved = m.get("tokens") or []
    if saved and zm.str_tokens(ids[0])[: len(saved)] != saved[: ids.shape[1]]:
        raise UsageError(
            f"the text of {path / MEASURE_FILE} no longer tokenizes to its saved tokens "
            f"(model {zm.name}); rerun p0-circuits measure"
        )
    return ids, bos


def write_views(out_dir: str | os.PathLike, zm, *, top_k: int = 6, view_tokens: int = 32) -> Path:
    """Compute ``views.json`` for a measure or discover directory (one forward pass)."""
    ids, bos = saved_prompt(out_dir, zm)
    data = V.view_data_for_ids(zm, ids, bos=bos, top_k=top_k, max_tokens=view_tokens)
    return V.write_view_data(out_dir, data)


def model_name_of(out_dir: str | os.PathLike) -> str:
    """The model a result directory was made with (its JSON's ``model``)."""
    path = Path(out_dir)
    kind = detect_kind(path)
    if kind == "measure":
        return str(_load_measure(path)["model"])
    if kind == "discover":
        if (path / PATCHING_FILE).is_file():
            return str(read_json(path / PATCHING_FILE).get("model"))
        graph = _load_graph(path)
        return str(graph.graph_attrs.get("model"))
    raise UsageError(f"{path} holds several runs; give one of its sub-directories")


__all__ = [
    "build_report",
    "command_line",
    "detect_kind",
    "model_name_of",
    "saved_prompt",
    "write_views",
]
