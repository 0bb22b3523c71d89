"""Circuit graph files: node-link JSON, GraphML and DOT, written atomically; JSON and GraphML
read back into a ``CircuitGraph`` that equals the one written (``CircuitGraph.same_as``).

GraphML is written for other tools to read as it is (Gephi, igraph, Cytoscape): every attribute
a plain scalar, a list spread over numbered attributes (``head_relative_effects.0``, ``.1``, ...),
None left out. Reading it back restores the lists, and None for the attributes every node and
edge carries (``NODE_SCHEMA``, ``EDGE_SCHEMA``), so JSON and GraphML give the same graph. DOT is
written here (no pygraphviz needed).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx

from circuits.circuit.colors import effect_color, effect_rgb
from circuits.circuit.schema import EDGE_SCHEMA, GRAPH_SCHEMA, NODE_SCHEMA
from circuits.core.atomic import atomic_path, write_json
from circuits.core.errors import UsageError

_LIST_SEP = "."
_LIST_ITEM = re.compile(r"^(.+)\.(\d+)$")


def write_node_link(graph: nx.DiGraph, path: str | os.PathLike) -> Path:
    return write_json(path, nx.node_link_data(graph, edges="edges"))


def from_node_link(data: dict[str, Any]) -> nx.DiGraph:
    key = "edges" if "edges" in data else "links"
    g = nx.node_link_graph(data, directed=True, multigraph=False, edges=key)
    return nx.DiGraph(g)


def _encode_attrs(attrs: dict[str, Any], where: str) -> dict[str, Any]:
    """Plain GraphML values: scalars as they are, a list as one attribute per element
    (``name.0``, ``name.1``, ...), None left out; nothing else is allowed."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, (bool, int, float, str)) for v in value):
                raise UsageError(
                    f"{where} attribute {key!r} holds a list of non-scalars; GraphML cannot hold it"
                )
            out.update({f"{key}{_LIST_SEP}{i}": v for i, v in enumerate(value)})
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            raise UsageError(
                f"{where} attribute {key!r} is a {type(value).__name__}; GraphML holds scalars and lists"
            )
    return out


def _decode_attrs(attrs: dict[str, Any], schema: tuple[str, ...]) -> dict[str, Any]:
    """The inverse of ``_encode_attrs``; schema attributes that were None come back as None."""
    out: dict[str, Any] = {k: None for k in schema}
    lists: dict[str, dict[int, Any]] = {}
    for key, value in attrs.items():
        match = _LIST_ITEM.match(key)
        if match:
            lists.setdefault(match.group(1), {})[int(match.group(2))] = value
        else:
            out[key] = value
    for key, items in lists.items():
        out[key] = [items[i] for i in sorted(items)]
    return out


def write_graphml(graph: nx.DiGraph, path: str | os.PathLike) -> Path:
    """GraphML that other tools read as it is (Gephi, igraph, Cytoscape): plain scalar attributes
    only, lists spread over numbered attributes, nothing encoded."""
    g = nx.DiGraph()
    for n, d in graph.nodes(data=True):
        g.add_node(n, **_encode_attrs(d, f"node {n}"))
    for u, v, d in graph.edges(data=True):
        g.add_edge(u, v, **_encode_attrs(d, f"edge {u} -> {v}"))
    g.graph.update(_encode_attrs(graph.graph, "graph"))
    path = Path(path)
    with atomic_path(path) as tmp:
        nx.write_graphml(g, tmp)
    return path


def read_graphml(path: str | os.PathLike) -> nx.DiGraph:
    raw = nx.read_graphml(path, force_multigraph=False)
    g = nx.DiGraph()
    for n, d in raw.nodes(data=True):
        g.add_node(n, **_decode_attrs(d, NODE_SCHEMA))
    for u, v, d in raw.edges(data=True):
        g.add_edge(u, v, **_decode_attrs(d, EDGE_SCHEMA))
    graph = {k: v for k, v in raw.graph.items() if k not in ("node_default", "edge_default")}
    g.graph.update(_decode_attrs(graph, GRAPH_SCHEMA))
    return g


GEXF_META_PREFIX = "p0-circuits graph attributes: "


def write_gexf(graph: nx.DiGraph, path: str | os.PathLike) -> Path:
    """GEXF 1.3 for Gephi: node and edge attributes as GraphML holds them (plain scalars, lists
    numbered), and the graph attributes, which GEXF has no place for, as JSON in the file's
    ``<meta><description>`` (Gephi shows it as the graph's description)."""
    import xml.etree.ElementTree as ET

    g = nx.DiGraph()
    for n, d in graph.nodes(data=True):
        g.add_node(n, label=n, **_encode_attrs(d, f"node {n}"))
    for u, v, d in graph.edges(data=True):
        g.add_edge(u, v, **_encode_attrs(d, f"edge {u} -> {v}"))
    g.graph["name"] = str(graph.graph.get("model") or "circuit")
    path = Path(path)
    with atomic_path(path) as tmp:
        nx.write_gexf(g, tmp, version="1.2draft")
        ET.register_namespace("", "http://www.gexf.net/1.2draft")
        ET.register_namespace("viz", "http://www.gexf.net/1.2draft/viz")
        tree = ET.parse(tmp)
        root = tree.getroot()
        ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        meta = root.find(f"{ns}meta")
        if meta is None:
            meta = ET.Element(f"{ns}meta")
            root.insert(0, meta)
        for tag, text in (
            ("creator", "p0-circuits"),
            ("description", GEXF_META_PREFIX + json.dumps(graph.graph, allow_nan=False)),
        ):
            old = meta.find(f"{ns}{tag}")
            if old is not None:
                meta.remove(old)
            ET.SubElement(meta, f"{ns}{tag}").text = text
        tree.write(tmp, encoding="utf-8", xml_declaration=True)
    return path


def read_gexf(path: str | os.PathLike) -> nx.DiGraph:
    """The inverse of ``write_gexf``: nodes, edges and the graph attributes from ``<meta>``."""
    import xml.etree.ElementTree as ET

    raw = nx.read_gexf(path)
    g = nx.DiGraph()
    for n, d in raw.nodes(data=True):
        d = {k: v for k, v in d.items() if k != "label"}
        g.add_node(n, **_decode_attrs(d, NODE_SCHEMA))
    for u, v, d in raw.edges(data=True):
        d = {k: v for k, v in d.items() if k not in ("id", "label")}
        g.add_edge(u, v, **_decode_attrs(d, EDGE_SCHEMA))
    for el in ET.parse(path).getroot().iter():
        text = el.text or ""
        if el.tag.endswith("description") and text.startswith(GEXF_META_PREFIX):
            g.graph.update(json.loads(text[len(GEXF_META_PREFIX) :]))
    return g


DOT_DARK = 0.55
"""A node filled past this fraction of the effect scale gets white text."""
RECEIVER_KINDS = ("q", "k", "v", "mlp_in")


def _dot_quote(s: object) -> str:
    """A DOT string: backslashes and quotes escaped, line breaks as DOT's ``\\n``."""
    text = str(s).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def _percent(relative: float | None, of: str = "of sink") -> str:
    return "" if relative is None else f"{100.0 * relative:+.1f}% {of}"


def _share_words(g: nx.DiGraph) -> tuple[str, str]:
    """What a relative effect is a share of, and what the colour key says, for the readout the
    circuit was discovered for (``discover --readout``; the sink unless the graph says other)."""
    metric = g.graph.get("metric")
    if metric in (None, "sink_score"):
        return "of sink", "blue: patching it lowers the sink, red: raises it"
    what = str(g.graph.get("readout_label") or metric)
    return "of P0's effect", f"blue: patching it removes P0's effect on the {what}, red: adds to it"


def _scale(values: Iterable[float | None]) -> float:
    """The largest finite |value| (1.0 when there is none): one end of a symmetric scale."""
    return max((abs(v) for v in values if v is not None and math.isfinite(v)), default=0.0) or 1.0


def _dot_title(g: nx.DiGraph) -> str | None:
    """The graph's title: model, faithfulness and the colour key."""
    what = (
        "sink circuit"
        if _share_words(g)[0] == "of sink"
        else "circuit for the " + str(g.graph.get("readout_label") or g.graph.get("metric"))
    )
    parts = [f"{g.graph['model']} P0 {what}"] if g.graph.get("model") else []
    kept, ablated = g.graph.get("faithfulness_kept"), g.graph.get("faithfulness_ablated")
    if kept is not None and ablated is not None:
        cf = g.graph.get("counterfactual")
        parts.append(
            f"kept {kept:.0%} / ablated {ablated:.0%} of the clean sink"
            + (f" ({cf} counterfactual)" if cf else "")
        )
    if not parts:
        return None
    parts.append(_share_words(g)[1] + "; dashed: backup")
    return "\n".join(parts)


def _dot_node(name: str, d: dict[str, Any], limit: float, of: str = "of sink") -> str:
    rel = d.get("relative")
    kind = d.get("kind")
    if (
        kind in RECEIVER_KINDS
    ):  # a later layer's input: where the sink is read, no effect of its own
        sink = d.get("sink_clean")
        label = name if sink is None else f"{name}\nclean sink {sink:.2f}"
        return f"  {_dot_quote(name)} [label={_dot_quote(label)}, shape=ellipse, fillcolor=white];"
    style = "rounded,filled" + (",dashed" if d.get("role") == "backup" else "")
    lines = [name, f"({kind})" if d.get("role") != "backup" else f"({kind}, backup)"]
    if rel is not None:
        lines.append(_percent(rel, of))
    font = "white" if rel is not None and abs(rel) >= DOT_DARK * limit else "black"
    label = "\n".join(lines)
    attrs = (
        f"label={_dot_quote(label)}, style={_dot_quote(style)}, "
        f"fillcolor={_dot_quote(effect_rgb(rel, limit))}, fontcolor={font}, "
        f"penwidth={2.0 if d.get('role') == 'backup' else 1.0}"
    )
    return f"  {_dot_quote(name)} [{attrs}];"


def to_dot(graph: nx.DiGraph) -> str:
    """DOT text in the toolkit's conventions (``circuits.circuit.colors``): each P0 component
    filled with the effect colour of its relative effect (blue: patching it at the
    counterfactual lowers the sink) and labelled with it as a percentage of the clean sink;
    backups dashed and labelled as such; receivers (a later layer's K/Q/V or MLP input) white
    with their clean sink; edges coloured by the sign of the path's effect, as wide as its
    relative effect, labelled with the path type and that percentage (of the receiver layer's
    own clean sink for a path into a later layer's K/Q/V). The title carries the
    faithfulness, the counterfactual and the colour key."""
    g = graph
    limit = _scale(d.get("relative") for _, d in g.nodes(data=True))
    edge_limit = _scale(d.get("relative", d.get("effect")) for _, _, d in g.edges(data=True))
    lines = [
        "digraph circuit {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    title = _dot_title(g)
    if title:
        lines.append(f"  label={_dot_quote(title)}; labelloc=t;")
    for n, d in sorted(g.nodes(data=True), key=lambda nd: (nd[1].get("layer") or 0, nd[0])):
        lines.append(_dot_node(n, d, limit, _share_words(g)[0]))
    for u, v, d in g.edges(data=True):
        rel, eff = d.get("relative"), d.get("effect")
        size = rel if rel is not None else eff
        pct = _percent(rel, _share_words(g)[0])
        if pct and g.nodes[v].get("kind") in RECEIVER_KINDS:  # read at the receiver's layer
            pct = pct.replace("of sink", "of its layer's sink")
        label = " ".join(x for x in (d.get("path_type", ""), pct) if x)
        width = 1.0 if size is None else 1.0 + 5.0 * min(1.0, abs(size) / edge_limit)
        color = "#777777" if size is None else effect_color(size)
        lines.append(
            f"  {_dot_quote(u)} -> {_dot_quote(v)} [label={_dot_quote(label)}, "
            f"color={_dot_quote(color)}, fontcolor={_dot_quote(color)}, penwidth={width:.2f}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def load_graph(path: str | os.PathLike) -> nx.DiGraph:
    """Read ``circuit.json`` (node-link) or ``circuit.graphml`` back."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if path.suffix == ".json":
        return from_node_link(json.loads(path.read_text()))
    if path.suffix in (".graphml", ".xml"):
        return read_graphml(path)
    if path.suffix == ".gexf":
        return read_gexf(path)
    raise UsageError(f"cannot load {path}: use a .json (node-link), .graphml or .gexf file")
