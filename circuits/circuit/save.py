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
from circuits.circuit.record import DiscoveryRecord
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


def graph_attributes(record: DiscoveryRecord | dict[str, Any]) -> dict[str, Any]:
    """The graph-level attributes of a discovery's exports, from its record."""
    rec = DiscoveryRecord.of(record)
    faith, pred = rec.faithfulness, rec.prediction
    prov = rec.provenance or {}
    versions = prov.get("versions") or {}
    metric = rec.metric or {}
    curve = rec.faithfulness_curve.summary if rec.faithfulness_curve is not None else {}

    def area(ranking: str, which: str) -> float | None:
        areas = curve.get(ranking)
        return None if areas is None else getattr(areas, which)

    return {
        "model": rec.model,
        "counterfactual": rec.counterfactual,
        "counterfactual_definition": rec.counterfactual_definition,
        "metric": metric.get("name"),
        "metric_definition": metric.get("definition"),
        "readout": None if rec.readout is None else rec.readout.spec,
        "readout_label": None if rec.readout is None else rec.readout.label,
        "clean_sink": None if rec.clean is None else rec.clean.sink,
        # one readable string ("attn0@p0, mlp0@p0"; "" for no circuit): every tool shows it
        "circuit": None if rec.circuit is None else ", ".join(rec.circuit),
        "verdict": rec.verdict,
        "faithfulness_kept": None if faith is None else faith.kept,
        "faithfulness_ablated": None if faith is None else faith.ablated,
        "faithfulness_floor": None if faith is None else faith.floor,
        "faithfulness_cpr": area("exact", "cpr"),
        "faithfulness_cmd": area("exact", "cmd"),
        "first_pass_cpr": area("first_pass", "cpr"),
        "first_pass_cmd": area("first_pass", "cmd"),
        "random_cpr_mean": area("random_mean", "cpr"),
        "random_cmd_mean": area("random_mean", "cmd"),
        "prediction_clean_loss": None if pred is None else pred.clean_loss,
        "prediction_circuit_loss_increase": None if pred is None else pred.circuit.loss_increase,
        "prediction_circuit_kl": None if pred is None else pred.circuit.kl,
        "prediction_random_kl_mean": None if pred is None else pred.random.kl_mean,
        "prediction_random_loss_increase_mean": (
            None if pred is None else pred.random.loss_increase_mean
        ),
        "bos": rec.bos,
        "command_line": prov.get("command_line"),
        "p0_circuits_version": versions.get("p0_circuits"),
        "transformer_lens_version": versions.get("transformer_lens"),
        "torch_version": versions.get("torch"),
        "record": PATCHING_FILE,
    }


def save_discovery(
    out_dir: str | os.PathLike, record: DiscoveryRecord | dict[str, Any], graph: CircuitGraph
) -> list[Path]:
    """Write ``patching.json`` (with its ``format``), ``circuit.json`` / ``.graphml`` / ``.dot``
    with the graph attributes above, ``circuit.attribution_graph.json`` (circuit-tracer /
    Neuronpedia), and the manifest, into an existing folder; the files."""
    path = Path(out_dir)
    rec = DiscoveryRecord.of(record)
    graph.g.graph.update({k: v for k, v in graph_attributes(rec).items() if v is not None})
    data = {"format": RECORD_FORMATS["discover"], **rec.to_json()}
    written = [
        write_json(path / PATCHING_FILE, finite(data)),
        graph.write_json(path / CIRCUIT_JSON),
        graph.write_graphml(path / CIRCUIT_GRAPHML),
        graph.write_dot(path / CIRCUIT_DOT),
        write_attribution_graph(path / CIRCUIT_ATTRIBUTION_GRAPH, graph, rec),
    ]
    write_manifest(path)
    return written
