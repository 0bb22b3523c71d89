"""Saving a discovery: ``patching.json`` and the circuit's files, self-describing, no rendering.

Every export carries, as graph attributes, what a reader needs without ``patching.json``: the
model, the counterfactual and readout with their definitions, the clean sink, the circuit, its
faithfulness (kept / ablated / floor), the verdict, its effect on the model's predictions, and
provenance (command line, library versions). GraphML holds them as plain attributes (lists as
``name.0``, ``name.1``, ...), so Gephi, igraph or Cytoscape show them as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from circuits.circuit.attribution_graph import write_attribution_graph
from circuits.circuit.graph import CircuitGraph
from circuits.core.atomic import write_json
from circuits.core.conventions import (
    CIRCUIT_ATTRIBUTION_GRAPH,
    CIRCUIT_DOT,
    CIRCUIT_GRAPHML,
    CIRCUIT_JSON,
    PATCHING_FILE,
    RECORD_FORMATS,
)
from circuits.core.manifest import write_manifest
from circuits.core.records import finite


def graph_attributes(record: dict[str, Any]) -> dict[str, Any]:
    """The graph-level attributes of a discovery's exports, from its record."""
    faith = record.get("faithfulness") or {}
    pred = record.get("prediction") or {}
    prov = record.get("provenance") or {}
    versions = prov.get("versions") or {}
    metric = record.get("metric") or {}
    clean = record.get("clean") or {}
    curve = (record.get("faithfulness_curve") or {}).get("summary") or {}
    return {
        "model": record.get("model"),
        "counterfactual": record.get("counterfactual"),
        "counterfactual_definition": record.get("counterfactual_definition"),
        "metric": metric.get("name"),
        "metric_definition": metric.get("definition"),
        "clean_sink": clean.get("sink"),
        # one readable string ("attn0@p0, mlp0@p0"; "" for no circuit): every tool shows it
        "circuit": None if record.get("circuit") is None else ", ".join(record["circuit"]),
        "verdict": record.get("verdict"),
        "faithfulness_kept": faith.get("kept"),
        "faithfulness_ablated": faith.get("ablated"),
        "faithfulness_floor": faith.get("floor"),
        "faithfulness_cpr": (curve.get("exact") or {}).get("cpr"),
        "faithfulness_cmd": (curve.get("exact") or {}).get("cmd"),
        "first_pass_cpr": (curve.get("first_pass") or {}).get("cpr"),
        "first_pass_cmd": (curve.get("first_pass") or {}).get("cmd"),
        "random_cpr_mean": (curve.get("random_mean") or {}).get("cpr"),
        "random_cmd_mean": (curve.get("random_mean") or {}).get("cmd"),
        "prediction_clean_loss": pred.get("clean_loss"),
        "prediction_circuit_loss_increase": (pred.get("circuit") or {}).get("loss_increase"),
        "prediction_circuit_kl": (pred.get("circuit") or {}).get("kl"),
        "prediction_random_kl_mean": (pred.get("random") or {}).get("kl_mean"),
        "prediction_random_loss_increase_mean": (pred.get("random") or {}).get(
            "loss_increase_mean"
        ),
        "bos": record.get("bos"),
        "command_line": prov.get("command_line"),
        "p0_circuits_version": versions.get("p0_circuits"),
        "transformer_lens_version": versions.get("transformer_lens"),
        "torch_version": versions.get("torch"),
        "record": PATCHING_FILE,
    }


def save_discovery(
    out_dir: str | os.PathLike, record: dict[str, Any], graph: CircuitGraph
) -> list[Path]:
    """Write ``patching.json`` (with its ``format``), ``circuit.json`` / ``.graphml`` / ``.dot``
    with the graph attributes above, ``circuit.attribution_graph.json`` (circuit-tracer /
    Neuronpedia), and the manifest, into an existing folder; the files."""
    path = Path(out_dir)
    graph.g.graph.update({k: v for k, v in graph_attributes(record).items() if v is not None})
    written = [
        write_json(path / PATCHING_FILE, finite({"format": RECORD_FORMATS["discover"], **record})),
        graph.write_json(path / CIRCUIT_JSON),
        graph.write_graphml(path / CIRCUIT_GRAPHML),
        graph.write_dot(path / CIRCUIT_DOT),
        write_attribution_graph(path / CIRCUIT_ATTRIBUTION_GRAPH, graph, record),
    ]
    write_manifest(path)
    return written
