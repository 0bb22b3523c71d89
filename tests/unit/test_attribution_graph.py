"""The attribution-graph export, validated by circuit-tracer's own pydantic models and by the
constraints of Neuronpedia's graph schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from circuits.circuit import DiscoverConfig, discover
from circuits.circuit.attribution_graph import viewer_folder
from tests.unit.test_discover import build_circuit_model

graph_models = pytest.importorskip(
    "circuit_tracer.frontend.graph_models",
    reason="circuit-tracer is a test dependency: pip install --no-deps circuit-tracer==0.5.0",
)

# The required fields and types of Neuronpedia's apps/webapp/app/api/graph/graph-schema.json
# (hijohnnylin/neuronpedia at b8efe84), written out here: the viewer rejects a graph without them.
NEURONPEDIA_REQUIRED = {
    "type": "object",
    "required": ["metadata", "qParams", "nodes", "links"],
    "properties": {
        "metadata": {
            "type": "object",
            "required": ["slug", "scan", "prompt_tokens", "prompt"],
            "properties": {
                "slug": {"type": "string"},
                "scan": {"type": "string"},
                "prompt_tokens": {"type": "array", "items": {"type": "string"}},
                "prompt": {"type": "string"},
                "info": {
                    "type": "object",
                    "properties": {
                        "description": {"type": "string"},
                        "generator": {"type": "object"},
                        "create_time_ms": {"type": "number"},
                    },
                },
            },
        },
        "qParams": {"type": "object"},
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "node_id",
                    "feature",
                    "layer",
                    "ctx_idx",
                    "feature_type",
                    "jsNodeId",
                    "clerp",
                ],
                "properties": {
                    "node_id": {"type": "string"},
                    "feature": {"type": ["integer", "null"]},
                    "layer": {"type": ["string", "integer"]},
                    "ctx_idx": {"type": "integer"},
                    "feature_type": {"type": "string"},
                    "jsNodeId": {"type": "string"},
                    "clerp": {"type": "string"},
                    "influence": {"type": ["number", "null"]},
                    "activation": {"type": ["number", "null"]},
                },
            },
        },
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["source", "target", "weight"],
                "properties": {
                    "source": {"type": "string"},
                    "target": {"type": "string"},
                    "weight": {"type": "number"},
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import torch

    tokens = torch.randint(0, 8, (4, 12), generator=torch.Generator().manual_seed(2))
    config = DiscoverConfig(counterfactual="shift", first_receiver=1, progress=False)
    found = discover(build_circuit_model(), tokens, config, model_name="planted")
    out = found.save(tmp_path_factory.mktemp("disc") / "d")
    return found, json.loads((out / "circuit.attribution_graph.json").read_text()), out


def test_export_validates_against_circuit_tracer_and_neuronpedia(saved):
    _, data, _ = saved
    model = graph_models.Model.model_validate(data)  # circuit-tracer's own models
    assert model.metadata.scan == "planted"
    jsonschema.validate(data, NEURONPEDIA_REQUIRED)
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids))
    assert {link["source"] for link in data["links"]} | {
        link["target"] for link in data["links"]
    } <= set(ids)


def test_export_says_what_the_circuit_is(saved):
    found, data, _ = saved
    rec = found.record
    by_label = {n["clerp"].split(":")[0]: n for n in data["nodes"]}
    # the planted circuit: head 0.0 and MLP 0 at P0, reading into layers 1 and 2's keys
    assert "head 0.0 at P0" in by_label and "MLP 0 at P0" in by_label
    assert by_label["MLP 0 at P0"]["layer"] == "0" and by_label["MLP 0 at P0"]["ctx_idx"] == 0
    readouts = [n for n in data["nodes"] if n["feature_type"] == "logit"]
    assert sorted(n["feature"] for n in readouts) == [1, 2]
    per_layer = rec["clean"]["per_receiver_layer"]
    for n in readouts:
        assert n["token_prob"] == pytest.approx(
            per_layer[str(n["feature"])]
            if isinstance(next(iter(per_layer)), str)
            else per_layer[n["feature"]]
        )
    # link weights are the path-patching effects / clean sink recorded in patching.json
    paths = {
        (r["sites"][0]["name"], r["sites"][1]["layer"], r["sites"][1]["kind"]): r["relative"]
        for block in ("paths_mlp", "paths_k")
        for r in (rec[block] or {"effects": []})["effects"]
    }
    mlp_id = by_label["MLP 0 at P0"]["node_id"]
    head_id = by_label["head 0.0 at P0"]["node_id"]
    head_to_mlp = next(
        link for link in data["links"] if link["source"] == head_id and link["target"] == mlp_id
    )
    assert head_to_mlp["weight"] == pytest.approx(paths[("attn0.h0@p0", 0, "mlp_in")])
    info = data["metadata"]["info"]
    assert info["faithfulness"]["kept"] == pytest.approx(found.faithfulness_kept)
    assert info["faithfulness"]["curve"]["exact"]["cpr"] == pytest.approx(
        rec["faithfulness_curve"]["summary"]["exact"]["cpr"]
    )
    assert info["counterfactual"]["spec"] == "shift"
    assert "shift" in info["counterfactual"]["definition"] or info["counterfactual"]["definition"]
    assert data["metadata"]["prompt_tokens"] == [str(t) for t in rec["tokens"][0]]


def test_viewer_folder_is_what_circuit_tracers_server_reads(saved, tmp_path):
    _, data, out = saved
    folder = viewer_folder(out / "circuit.attribution_graph.json", tmp_path / "graphs")
    slug = data["metadata"]["slug"]
    assert json.loads((folder / f"{slug}.json").read_text()) == data
    index = json.loads((folder / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == [slug]
    graph_models.Metadata.model_validate(index["graphs"][0])
