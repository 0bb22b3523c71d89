"""``CircuitGraph``: the P0 Sink Circuit as a networkx directed graph.

Nodes are components at a position or the inputs they feed, with stable readable names:

* ``embed@p0``, ``attn0@p0`` (a whole attention layer's output at P0), ``attn0.h3@p0`` (one
  head), ``mlp1@p0``, ``resid_pre5@p0``: components' outputs (``circuits.patching.Site.name``);
* ``attn5.k``, ``attn5.q``, ``attn5.v`` (the K/Q/V input of every head in layer 5),
  ``attn5.kv1.k`` (one KV head's K input), ``mlp2.in``: receivers of paths
  (``circuits.patching.Receiver.name``).

Node attributes: ``layer`` (int; -1 for the embedding), ``kind`` (``embed``, ``attn``, ``head``,
``mlp``, ``resid_pre``/``resid_mid``/``resid_post``, ``attn_q``/``attn_k``/``attn_v``,
``mlp_in``), ``head`` (int or None), ``position`` (int, or None for "every position" or a
receiver), ``effect`` (float: the patching effect on the metric, patched minus clean; None if not
measured) and any extra attributes. Edge attributes: ``effect`` (path-patching effect) and
``path_type`` (``q``, ``k``, ``v`` or ``mlp``). Graph attributes hold the experiment (model,
counterfactual, metric, faithfulness, provenance).

Exports: node-link JSON (``to_json``/networkx ``node_link_data``), GraphML (attributes survive:
None is left out and restored, lists/dicts are stored as ``json:``-prefixed strings), DOT text
(written here; no pygraphviz). ``CircuitGraph.load`` reads JSON and GraphML back.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import networkx as nx

from circuits.errors import UsageError
from circuits.io import atomic_path, write_json, write_text

NODE_KINDS = (
    "embed", "attn", "head", "mlp", "resid_pre", "resid_mid", "resid_post",
    "attn_q", "attn_k", "attn_v", "mlp_in",
)
PATH_TYPES = ("q", "k", "v", "mlp")
_REQUIRED_NODE_ATTRS = ("layer", "kind", "head", "position", "effect")
_JSON_PREFIX = "json:"


def _plain(value: Any) -> Any:
    """Python scalars only (no numpy/torch numbers), NaN -> None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if math.isnan(value) else float(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _plain(value.item())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class CircuitGraph:
    """A directed graph of components (nodes) and paths (edges) with their patching effects."""

    def __init__(self, graph: nx.DiGraph | None = None, **attrs: Any) -> None:
        self.g: nx.DiGraph = nx.DiGraph() if graph is None else graph
        self.g.graph.update({k: _plain(v) for k, v in attrs.items()})

    # -- building ------------------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        layer: int,
        kind: str,
        head: int | None = None,
        position: int | None = None,
        effect: float | None = None,
        **attrs: Any,
    ) -> None:
        if kind not in NODE_KINDS:
            raise UsageError(f"unknown node kind {kind!r}; choose one of {', '.join(NODE_KINDS)}")
        self.g.add_node(
            name,
            layer=int(layer),
            kind=kind,
            head=None if head is None else int(head),
            position=None if position is None else int(position),
            effect=_plain(None if effect is None else float(effect)),
            **{k: _plain(v) for k, v in attrs.items()},
        )

    def add_edge(self, source: str, target: str, *, path_type: str, effect: float | None, **attrs: Any) -> None:
        if path_type not in PATH_TYPES:
            raise UsageError(f"unknown path type {path_type!r}; choose one of {', '.join(PATH_TYPES)}")
        for n in (source, target):
            if n not in self.g:
                raise UsageError(f"edge {source} -> {target}: node {n} is not in the graph; add it first")
        self.g.add_edge(
            source, target, path_type=path_type,
            effect=_plain(None if effect is None else float(effect)),
            **{k: _plain(v) for k, v in attrs.items()},
        )

    @classmethod
    def from_site(cls, site) -> dict[str, Any]:
        """Node attributes for a ``circuits.patching.Site``."""
        pos = site.positions
        return {
            "layer": -1 if site.kind == "embed" else site.layer,
            "kind": site.kind,
            "head": site.head,
            "position": pos[0] if pos is not None and len(pos) == 1 else None,
        }

    @classmethod
    def from_receiver(cls, receiver) -> dict[str, Any]:
        """Node attributes for a ``circuits.patching.Receiver``."""
        kind = "mlp_in" if receiver.kind == "mlp" else f"attn_{receiver.kind}"
        heads = receiver.heads
        return {
            "layer": receiver.layer,
            "kind": kind,
            "head": heads[0] if heads is not None and len(heads) == 1 else None,
            "position": None,
        }

    # -- views ---------------------------------------------------------------------------------

    @property
    def graph_attrs(self) -> dict[str, Any]:
        return self.g.graph

    def nodes(self, kind: str | None = None) -> list[str]:
        return [n for n, d in self.g.nodes(data=True) if kind is None or d["kind"] == kind]

    def edges(self) -> list[tuple[str, str, dict[str, Any]]]:
        return list(self.g.edges(data=True))

    def __contains__(self, name: str) -> bool:
        return name in self.g

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def threshold(
        self, node_min: float = 0.0, edge_min: float = 0.0, *, relative_to: float | None = None, keep_isolated: bool = False
    ) -> CircuitGraph:
        """A copy keeping nodes with |effect| >= node_min and edges with |effect| >= edge_min.

        With ``relative_to`` (e.g. the clean metric) thresholds are fractions of it. Nodes
        without an effect (receivers) are kept while an edge touches them. Edges need both ends.
        """
        scale = abs(relative_to) if relative_to else 1.0
        g = self.g.copy()
        for n, d in list(g.nodes(data=True)):
            eff = d.get("effect")
            if eff is not None and abs(eff) < node_min * scale:
                g.remove_node(n)
        for u, v, d in list(g.edges(data=True)):
            eff = d.get("effect")
            if eff is None or abs(eff) < edge_min * scale:
                g.remove_edge(u, v)
        if not keep_isolated:
            for n, d in list(g.nodes(data=True)):
                if d.get("effect") is None and g.degree(n) == 0:
                    g.remove_node(n)
        out = CircuitGraph(g)
        out.g.graph["threshold"] = {"node_min": node_min, "edge_min": edge_min, "relative_to": relative_to}
        return out

    # -- node-link JSON ------------------------------------------------------------------------

    def to_node_link(self) -> dict[str, Any]:
        return nx.node_link_data(self.g, edges="edges")

    @classmethod
    def from_node_link(cls, data: dict[str, Any]) -> CircuitGraph:
        key = "edges" if "edges" in data else "links"
        g = nx.node_link_graph(data, directed=True, multigraph=False, edges=key)
        return cls(nx.DiGraph(g))

    def write_json(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_node_link())

    # -- GraphML -------------------------------------------------------------------------------

    @staticmethod
    def _encode(value: Any) -> Any:
        if isinstance(value, (list, tuple, dict)) or (isinstance(value, str) and value.startswith(_JSON_PREFIX)):
            return _JSON_PREFIX + json.dumps(value)
        return value

    @staticmethod
    def _decode(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(_JSON_PREFIX):
            return json.loads(value[len(_JSON_PREFIX) :])
        return value

    _NONE_KEY = "_none_attrs"

    @classmethod
    def _encode_attrs(cls, attrs: dict[str, Any]) -> dict[str, Any]:
        out = {k: cls._encode(v) for k, v in attrs.items() if v is not None}
        nones = sorted(k for k, v in attrs.items() if v is None)
        if nones:
            out[cls._NONE_KEY] = ",".join(nones)
        return out

    @classmethod
    def _decode_attrs(cls, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = dict(attrs)
        nones = attrs.pop(cls._NONE_KEY, "")
        out = {k: None for k in nones.split(",") if k}
        out.update({k: cls._decode(v) for k, v in attrs.items()})
        return out

    def write_graphml(self, path: str | os.PathLike) -> Path:
        """GraphML with every attribute surviving a round trip (see the module docstring).

        None values are left out and their keys listed in a ``_none_attrs`` attribute of the
        element; lists and dicts become ``json:``-prefixed strings.
        """
        g = nx.DiGraph()
        for n, d in self.g.nodes(data=True):
            g.add_node(n, **self._encode_attrs(d))
        for u, v, d in self.g.edges(data=True):
            g.add_edge(u, v, **self._encode_attrs(d))
        g.graph.update(self._encode_attrs(self.g.graph))
        path = Path(path)
        with atomic_path(path) as tmp:
            nx.write_graphml(g, tmp)
        return path

    @classmethod
    def read_graphml(cls, path: str | os.PathLike) -> CircuitGraph:
        raw = nx.read_graphml(path, force_multigraph=False)
        g = nx.DiGraph()
        for n, d in raw.nodes(data=True):
            g.add_node(n, **cls._decode_attrs(d))
        for u, v, d in raw.edges(data=True):
            g.add_edge(u, v, **cls._decode_attrs(d))
        graph = {k: v for k, v in raw.graph.items() if k not in ("node_default", "edge_default")}
        g.graph.update(cls._decode_attrs(graph))
        return cls(g)

    # -- DOT -----------------------------------------------------------------------------------

    _COLORS = {
        "embed": "#9e9e9e", "attn": "#1f77b4", "head": "#6baed6", "mlp": "#d62728",
        "resid_pre": "#bdbdbd", "resid_mid": "#bdbdbd", "resid_post": "#bdbdbd",
        "attn_q": "#2ca02c", "attn_k": "#ff7f0e", "attn_v": "#9467bd", "mlp_in": "#e377c2",
    }

    def to_dot(self) -> str:
        """Graphviz DOT text: nodes coloured by kind and labelled with their effect, edges by
        path type and effect. Render with ``dot -Tsvg circuit.dot`` if Graphviz is installed."""

        def q(s: str) -> str:
            return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = ["digraph circuit {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
        title = self.g.graph.get("model")
        if title:
            lines.append(f"  label={q(f'{title} P0 sink circuit')}; labelloc=t;")
        for n, d in sorted(self.g.nodes(data=True), key=lambda nd: (nd[1].get("layer", 0), nd[0])):
            eff = d.get("effect")
            label = n if eff is None else f"{n}\\neffect {eff:+.3g}"
            color = self._COLORS.get(d.get("kind"), "#ffffff")
            lines.append(f'  {q(n)} [label="{label}", fillcolor={q(color)}];')
        for u, v, d in self.g.edges(data=True):
            eff = d.get("effect")
            label = d.get("path_type", "") + ("" if eff is None else f" {eff:+.3g}")
            width = 1.0 if eff is None else 1.0 + 4.0 * min(1.0, abs(eff))
            lines.append(f"  {q(u)} -> {q(v)} [label={q(label)}, penwidth={width:.2f}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def write_dot(self, path: str | os.PathLike) -> Path:
        return write_text(path, self.to_dot())

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> CircuitGraph:
        """Read ``circuit.json`` (node-link) or ``circuit.graphml`` back."""
        path = Path(path)
        if not path.exists():
            raise UsageError(f"no such file: {path}")
        if path.suffix == ".json":
            return cls.from_node_link(json.loads(path.read_text()))
        if path.suffix in (".graphml", ".xml"):
            return cls.read_graphml(path)
        raise UsageError(f"cannot load {path}: use a .json (node-link) or .graphml file")

    def same_as(self, other: CircuitGraph) -> bool:
        """Equal nodes, edges and every attribute (floats compared to 1e-9)."""

        def close(a: Any, b: Any) -> bool:
            if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
                return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
            if isinstance(a, dict) and isinstance(b, dict):
                return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
            if isinstance(a, list) and isinstance(b, list):
                return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
            return a == b and type(a) is type(b)

        if set(self.g.nodes) != set(other.g.nodes) or set(self.g.edges) != set(other.g.edges):
            return False
        if not close(self.g.graph, other.g.graph):
            return False
        if not all(close(self.g.nodes[n], other.g.nodes[n]) for n in self.g.nodes):
            return False
        return all(close(self.g.edges[e], other.g.edges[e]) for e in self.g.edges)
