"""``CircuitGraph``: the P0 Sink Circuit as a networkx directed graph.

Nodes are components at a position or the inputs they feed, named as ``circuits.patching`` names
them (``Site.name``, ``Receiver.name``):

* ``embed@p0``, ``attn0@p0`` (a whole attention layer's output at P0), ``attn0.h3@p0`` (one
  head), ``mlp1@p0``, ``resid_pre5@p0``: components' outputs;
* ``attn5.k``, ``attn5.q``, ``attn5.v`` (the K/Q/V input of every head in layer 5),
  ``attn5.kv1.k`` (one KV head's K input), ``mlp2.in``: receivers of paths.

Node attributes: ``layer`` (int; -1 for the embedding), ``kind`` (a site kind -- ``embed``,
``attn``, ``head``, ``mlp``, ``resid_pre``/``resid_mid``/``resid_post`` -- or a receiver kind --
``q``, ``k``, ``v``, ``mlp_in``), ``head`` (int or None), ``position`` (int, or None for "every
position" or a receiver), ``effect`` (float: the patching effect on the metric, patched minus
clean; None if not measured) and any extra attributes. Edge attributes: ``effect`` (path-patching
effect) and ``path_type`` (the receiver kind: ``q``, ``k``, ``v`` or ``mlp_in``). Graph attributes
identify the experiment (model, counterfactual, metric, receivers, provenance); the measured
numbers (faithfulness, verdict) are in ``patching.json``, stored once.

Exports (``circuits.circuit.export``): node-link JSON, GraphML, DOT; ``CircuitGraph.load`` reads
JSON and GraphML back.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import networkx as nx

from circuits.circuit import export
from circuits.circuit.schema import (
    EDGE_SCHEMA,
    GRAPH_SCHEMA,
    NODE_KINDS,
    NODE_SCHEMA,
    PATH_TYPES,
    plain,
)
from circuits.core.atomic import write_text
from circuits.core.errors import UsageError


class CircuitGraph:
    """A directed graph of components (nodes) and paths (edges) with their patching effects."""

    def __init__(self, graph: nx.DiGraph | None = None, **attrs: Any) -> None:
        self.g: nx.DiGraph = nx.DiGraph() if graph is None else graph
        for key in GRAPH_SCHEMA:
            self.g.graph.setdefault(key, None)
        self.g.graph.update(
            {k: plain(v) for k, v in attrs.items() if v is not None or k in GRAPH_SCHEMA}
        )

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
        values = {k: plain(v) for k, v in attrs.items()}
        self.g.add_node(
            name,
            **{k: values.get(k) for k in NODE_SCHEMA},
            **{k: v for k, v in values.items() if k not in NODE_SCHEMA and v is not None},
        )
        self.g.nodes[name].update(
            layer=int(layer),
            kind=kind,
            head=None if head is None else int(head),
            position=None if position is None else int(position),
            effect=plain(None if effect is None else float(effect)),
        )

    def add_edge(
        self, source: str, target: str, *, path_type: str, effect: float | None, **attrs: Any
    ) -> None:
        if path_type not in PATH_TYPES:
            raise UsageError(
                f"unknown path type {path_type!r}; choose one of {', '.join(PATH_TYPES)}"
            )
        for n in (source, target):
            if n not in self.g:
                raise UsageError(
                    f"edge {source} -> {target}: node {n} is not in the graph; add it first"
                )
        values = {k: plain(v) for k, v in attrs.items()}
        self.g.add_edge(
            source,
            target,
            **{k: values.get(k) for k in EDGE_SCHEMA},
            **{k: v for k, v in values.items() if k not in EDGE_SCHEMA and v is not None},
        )
        self.g.edges[source, target].update(
            path_type=path_type, effect=plain(None if effect is None else float(effect))
        )

    @classmethod
    def from_site(cls, site) -> dict[str, Any]:
        """Node attributes for a ``circuits.patching.Site``."""
        pos = site.positions
        return {
            "layer": site.order[0],
            "kind": site.kind,
            "head": site.head,
            "expert": site.expert,
            "position": pos[0] if pos is not None and len(pos) == 1 else None,
        }

    @classmethod
    def from_receiver(cls, receiver) -> dict[str, Any]:
        """Node attributes for a ``circuits.patching.Receiver``."""
        heads = receiver.heads
        return {
            "layer": receiver.layer,
            "kind": receiver.kind,
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
        self,
        node_min: float = 0.0,
        edge_min: float = 0.0,
        *,
        relative_to: float | None = None,
        keep_isolated: bool = False,
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
        out.g.graph.update(
            threshold_node_min=node_min,
            threshold_edge_min=edge_min,
            threshold_relative_to=relative_to,
        )
        return out

    # -- files (circuits.circuit.export) ------------------------------------------------------

    def write_json(self, path: str | os.PathLike) -> Path:
        """Node-link JSON (networkx ``node_link_data``), written atomically."""
        return export.write_node_link(self.g, path)

    def write_graphml(self, path: str | os.PathLike) -> Path:
        """GraphML with every attribute surviving a round trip (``circuits.circuit.export``)."""
        return export.write_graphml(self.g, path)

    def write_gexf(self, path: str | os.PathLike) -> Path:
        """GEXF for Gephi, graph attributes in its ``<meta>`` (``circuits.circuit.export``)."""
        return export.write_gexf(self.g, path)

    def to_dot(self) -> str:
        """Graphviz DOT text (render with ``dot -Tsvg circuit.dot`` if Graphviz is installed)."""
        return export.to_dot(self.g)

    def write_dot(self, path: str | os.PathLike) -> Path:
        return write_text(path, self.to_dot())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CircuitGraph:
        """Read ``circuit.json`` (node-link), ``circuit.graphml`` or ``circuit.gexf`` back."""
        return cls(export.load_graph(path))

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
