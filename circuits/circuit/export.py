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
import os
import re
from pathlib import Path
from typing import Any

import networkx as nx

from circuits.circuit.schema import EDGE_SCHEMA, GRAPH_SCHEMA, NODE_SCHEMA
from circuits.core.atomic import atomic_path, write_json
from circuits.core.errors import UsageError

_LIST_SEP = "."
_LIST_ITEM = re.compile(r"^(.+)\.(\d+)$")
KIND_COLORS = {
    "embed": "#9e9e9e",
    "attn": "#1f77b4",
    "head": "#6baed6",
    "mlp": "#d62728",
    "resid_pre": "#bdbdbd",
    "resid_mid": "#bdbdbd",
    "resid_post": "#bdbdbd",
    "q": "#2ca02c",
    "k": "#ff7f0e",
    "v": "#9467bd",
    "mlp_in": "#e377c2",
}
"""One colour per node kind, shared by the DOT export and the circuit figure."""


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


def to_dot(graph: nx.DiGraph) -> str:
    """DOT text: nodes coloured by kind and labelled with their effect, edges by path type and
    effect."""

    def q(s: str) -> str:
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    g = graph
    lines = [
        "digraph circuit {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    title = g.graph.get("model")
    if title:
        lines.append(f"  label={q(f'{title} P0 sink circuit')}; labelloc=t;")
    for n, d in sorted(g.nodes(data=True), key=lambda nd: (nd[1].get("layer", 0), nd[0])):
        eff = d.get("effect")
        label = n if eff is None else f"{n}\\neffect {eff:+.3g}"
        color = KIND_COLORS.get(d.get("kind"), "#ffffff")
        lines.append(f'  {q(n)} [label="{label}", fillcolor={q(color)}];')
    for u, v, d in g.edges(data=True):
        eff = d.get("effect")
        label = d.get("path_type", "") + ("" if eff is None else f" {eff:+.3g}")
        width = 1.0 if eff is None else 1.0 + 4.0 * min(1.0, abs(eff))
        lines.append(f"  {q(u)} -> {q(v)} [label={q(label)}, penwidth={width:.2f}];")
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
