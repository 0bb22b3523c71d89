"""Circuit graph files: node-link JSON, GraphML and DOT, written atomically; JSON and GraphML
read back into a ``CircuitGraph`` that equals the one written (``CircuitGraph.same_as``).

GraphML cannot hold None, lists or dicts: lists and dicts are stored as ``json:``-prefixed
strings and None values are left out, their keys listed in a ``_none_attrs`` attribute.
DOT is written here (no pygraphviz needed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import networkx as nx

from circuits.circuit.graph import CircuitGraph
from circuits.core.atomic import atomic_path, write_json
from circuits.core.errors import UsageError

_JSON_PREFIX = "json:"
_NONE_KEY = "_none_attrs"
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


def write_node_link(graph: CircuitGraph, path: str | os.PathLike) -> Path:
    return write_json(path, graph.to_node_link())


def from_node_link(data: dict[str, Any]) -> CircuitGraph:
    key = "edges" if "edges" in data else "links"
    g = nx.node_link_graph(data, directed=True, multigraph=False, edges=key)
    return CircuitGraph(nx.DiGraph(g))


def _encode(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)) or (
        isinstance(value, str) and value.startswith(_JSON_PREFIX)
    ):
        return _JSON_PREFIX + json.dumps(value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_JSON_PREFIX):
        return json.loads(value[len(_JSON_PREFIX) :])
    return value


def _encode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {k: _encode(v) for k, v in attrs.items() if v is not None}
    nones = sorted(k for k, v in attrs.items() if v is None)
    if nones:
        out[_NONE_KEY] = ",".join(nones)
    return out


def _decode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    attrs = dict(attrs)
    nones = attrs.pop(_NONE_KEY, "")
    out = {k: None for k in nones.split(",") if k}
    out.update({k: _decode(v) for k, v in attrs.items()})
    return out


def write_graphml(graph: CircuitGraph, path: str | os.PathLike) -> Path:
    g = nx.DiGraph()
    for n, d in graph.g.nodes(data=True):
        g.add_node(n, **_encode_attrs(d))
    for u, v, d in graph.g.edges(data=True):
        g.add_edge(u, v, **_encode_attrs(d))
    g.graph.update(_encode_attrs(graph.g.graph))
    path = Path(path)
    with atomic_path(path) as tmp:
        nx.write_graphml(g, tmp)
    return path


def read_graphml(path: str | os.PathLike) -> CircuitGraph:
    raw = nx.read_graphml(path, force_multigraph=False)
    g = nx.DiGraph()
    for n, d in raw.nodes(data=True):
        g.add_node(n, **_decode_attrs(d))
    for u, v, d in raw.edges(data=True):
        g.add_edge(u, v, **_decode_attrs(d))
    graph = {k: v for k, v in raw.graph.items() if k not in ("node_default", "edge_default")}
    g.graph.update(_decode_attrs(graph))
    return CircuitGraph(g)


def to_dot(graph: CircuitGraph) -> str:
    """DOT text: nodes coloured by kind and labelled with their effect, edges by path type and
    effect."""

    def q(s: str) -> str:
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    g = graph.g
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


def load_graph(path: str | os.PathLike) -> CircuitGraph:
    """Read ``circuit.json`` (node-link) or ``circuit.graphml`` back."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if path.suffix == ".json":
        return from_node_link(json.loads(path.read_text()))
    if path.suffix in (".graphml", ".xml"):
        return read_graphml(path)
    raise UsageError(f"cannot load {path}: use a .json (node-link) or .graphml file")
