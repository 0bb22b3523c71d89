"""The circuit as an attribution graph: the JSON circuit-tracer writes and Neuronpedia's graph
viewer reads (``metadata``, ``qParams``, ``nodes``, ``links``; circuit-tracer's pydantic models in
``circuit_tracer.frontend.graph_models``, Neuronpedia's ``graph-schema.json``).

How the P0 Sink Circuit maps onto that format:

* **nodes** are the circuit's components, all at P0 (``ctx_idx`` 0): the embedding as an
  ``embedding`` node (``E_<token id>_0``, layer ``"E"``); a head, a whole attention layer or an
  MLP as a node of its layer (``<layer>_<index>_0`` with index = the head, ``n_heads`` for the
  whole attention layer, ``n_heads + 1`` for the MLP; ``feature`` is circuit-tracer's Cantor
  pairing of layer and index), ``feature_type`` naming the kind (``attention head``,
  ``attention``, ``mlp``); ``clerp`` is a readable label with the component's exact effect;
* the **readouts** are the nodes a viewer puts at the top, where circuit-tracer puts the logits:
  one per receiver layer whose keys a path reaches (``feature_type`` ``logit``, layer
  ``n_layers + 1``, ``token_prob`` = that layer's clean sink score, which is an attention
  probability); ``clerp`` says it is a sink readout, not a logit;
* **links** are the measured paths (``circuits.patching.paths``): into an MLP's input and into a
  receiver layer's keys, ``weight`` = sink change / clean sink of the path's readout (signed:
  negative when patching the path lowers the sink);
* ``metadata``: the first prompt's tokens (effects are means over every prompt), the model as
  ``scan``, and in ``metadata.info`` the verdict, faithfulness (kept / ablated / floor, CPR / CMD)
  and the counterfactual with its definition.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from circuits.circuit.graph import CircuitGraph
from circuits.circuit.record import DiscoveryRecord
from circuits.core.atomic import write_json
from circuits.core.conventions import RECEIVER_KINDS


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def _slug(record: DiscoveryRecord) -> str:
    text = f"p0-sink-{record.model or 'model'}-{record.counterfactual or ''}"
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _prompt_tokens(record: DiscoveryRecord) -> list[str]:
    if record.str_tokens:
        return [str(t) for t in record.str_tokens[0]]
    return [str(t) for t in (record.tokens or [[]])[0]]


def _component_node(name: str, d: dict[str, Any], n_heads: int, p0_token: int) -> dict[str, Any]:
    rel = d.get("relative")
    effect = "" if rel is None else f": patching it changes the sink by {rel:+.1%}"
    kind, layer = d["kind"], int(d["layer"])
    if kind == "embed":
        return {
            "node_id": f"E_{p0_token}_0",
            "feature": 0,
            "layer": "E",
            "ctx_idx": 0,
            "feature_type": "embedding",
            "jsNodeId": f"E_{p0_token}-0",
            "clerp": f"embedding at P0{effect}",
        }
    if kind == "head":
        index, ftype, label = int(d["head"]), "attention head", f"head {layer}.{d['head']} at P0"
    elif kind == "attn":
        index, ftype, label = n_heads, "attention", f"attention {layer} at P0 (every head)"
    elif kind == "mlp":
        index, ftype, label = n_heads + 1, "mlp", f"MLP {layer} at P0"
    else:  # a residual-stream site
        index, ftype, label = n_heads + 2, kind, f"{kind} {layer} at P0"
    return {
        "node_id": f"{layer}_{index}_0",
        "feature": _cantor(layer, index),
        "layer": str(layer),
        "ctx_idx": 0,
        "feature_type": ftype,
        "jsNodeId": f"{layer}_{index}-0",
        "clerp": label + effect,
    }


def _readout_node(d: dict[str, Any], n_layers: int, first: bool) -> dict[str, Any]:
    layer, sink = int(d["layer"]), d.get("sink_clean")
    prob = 0.0 if sink is None else float(sink)
    return {
        "node_id": f"{n_layers + 1}_{layer}_0",
        "feature": layer,
        "layer": str(n_layers + 1),
        "ctx_idx": 0,
        "feature_type": "logit",
        "token_prob": prob,
        "is_target_logit": first,
        "jsNodeId": f"L_{layer}-0",
        "clerp": f"readout (not a logit): layer {layer}'s sink score on P0's key, clean {prob:.3f}",
    }


def _info(record: DiscoveryRecord, graph: CircuitGraph) -> dict[str, Any]:
    faith = record.faithfulness
    curve = record.faithfulness_curve
    versions = (record.provenance or {}).get("versions") or {}
    return {
        "description": f"{record.verdict or ''} Effects are means over "
        f"{record.n_prompts or '?'} prompts of {record.n_tokens or '?'} tokens; the "
        "prompt shown is the first. Link weight: sink change / clean sink of the path's readout.",
        "generator": {
            "name": "p0-circuits",
            "version": str(
                versions.get("p0_circuits") or graph.graph_attrs.get("p0_circuits_version")
            ),
        },
        "create_time_ms": time.time() * 1000,
        "faithfulness": {
            "kept": None if faith is None else faith.kept,
            "ablated": None if faith is None else faith.ablated,
            "floor": None if faith is None else faith.floor,
            "curve": {} if curve is None else {k: v.model_dump() for k, v in curve.summary.items()},
            "definition": None if faith is None else faith.definition,
        },
        "counterfactual": {
            "spec": record.counterfactual,
            "definition": record.counterfactual_definition,
        },
        "metric": (record.metric or {}).get("definition"),
        "clean_sink": None if record.clean is None else record.clean.sink,
        "command_line": (record.provenance or {}).get("command_line"),
    }


def attribution_graph(
    graph: CircuitGraph, record: DiscoveryRecord | dict[str, Any]
) -> dict[str, Any]:
    """The circuit in circuit-tracer / Neuronpedia's attribution-graph JSON (module docstring)."""
    record = DiscoveryRecord.of(record)
    shape = record.model_shape or {}
    heads = record.heads.effects if record.heads is not None else [1]
    n_heads = int(shape.get("n_heads") or len(heads))
    n_layers = int(shape.get("n_layers") or len(record.clean_sink_all_layers or [0]))
    p0_token = int((record.tokens or [[0]])[0][0])
    ids: dict[str, str] = {}
    nodes: list[dict[str, Any]] = []
    first_readout = True
    for name, d in sorted(graph.g.nodes(data=True), key=lambda nd: (nd[1]["layer"], nd[0])):
        if d["kind"] in RECEIVER_KINDS:
            node = _readout_node(d, n_layers, first_readout)
            first_readout = False
        else:
            node = _component_node(name, d, n_heads, p0_token)
        ids[name] = node["node_id"]
        nodes.append(node)
    links = [
        {"source": ids[u], "target": ids[v], "weight": float(d.get("relative") or 0.0)}
        for u, v, d in graph.edges()
    ]
    tokens = _prompt_tokens(record)
    return {
        "metadata": {
            "slug": _slug(record),
            "scan": str(record.model or "model"),
            "transcoder_list": [],
            "prompt_tokens": tokens,
            "prompt": "".join(tokens),
            "info": _info(record, graph),
        },
        "qParams": {
            "pinnedIds": [n["node_id"] for n in nodes],
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }


def write_attribution_graph(
    path: str | os.PathLike, graph: CircuitGraph, record: DiscoveryRecord | dict[str, Any]
) -> Path:
    """Write ``attribution_graph(graph, record)`` atomically."""
    return write_json(path, attribution_graph(graph, record))


def viewer_folder(graph_json: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A folder circuit-tracer's local viewer serves (``<slug>.json`` and
    ``graph-metadata.json``) from a saved ``circuit.attribution_graph.json``; returns the folder."""
    import json

    data = json.loads(Path(graph_json).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slug = data["metadata"]["slug"]
    write_json(out / f"{slug}.json", data)
    index = out / "graph-metadata.json"
    listed = json.loads(index.read_text())["graphs"] if index.is_file() else []
    listed = [g for g in listed if g.get("slug") != slug]
    meta = {k: v for k, v in data["metadata"].items() if k != "info"}
    write_json(index, {"graphs": [*listed, meta]})
    return out
