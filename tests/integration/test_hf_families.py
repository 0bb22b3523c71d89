"""Local Hugging Face folders of each family: loaded with TransformerLens' own converters and
checked against ``transformers`` (logits within 1e-4); measure and discover run on each."""

from __future__ import annotations

import json

import networkx as nx
import pytest
import torch
from _hf_helpers import FAMILIES, save_family

from circuits.cli import main
from circuits.core.errors import UsageError
from circuits.zoo.load import load_model
from circuits.zoo.pins import VERIFIED_FAMILIES

IDS = [[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61]]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)  # a name with the family in it, on purpose
    reference = save_family(request.param, folder)
    return request.param, folder, reference


def test_a_local_folder_loads_like_transformers(family):
    model_type, folder, reference = family
    assert model_type in VERIFIED_FAMILIES
    zm = load_model(str(folder), progress=False)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        diff = (zm.model(ids) - reference(ids).logits).abs().max().item()
    assert diff <= 1e-4, f"{model_type}: logits differ by {diff}"


def test_measure_and_discover_run_on_it(family, tmp_path):
    model_type, folder, _ = family
    assert (
        main(
            [
                "measure",
                "--model",
                str(folder),
                "--max-tokens",
                "24",
                "--out",
                str(tmp_path / "m"),
                "--quiet",
            ]
        )
        == 0
    )
    layers = json.loads((tmp_path / "m" / "sink_metrics.json").read_text())["layers"]
    assert len(layers) == 2
    argv = [
        "discover",
        "--model",
        str(folder),
        "--n-prompts",
        "2",
        "--n-tokens",
        "12",
        "--first-receiver",
        "1",
        "--threshold",
        "0",
        "--out",
        str(tmp_path / "d"),
        "--quiet",
    ]
    assert main(argv) == 0
    record = json.loads((tmp_path / "d" / "patching.json").read_text())
    graph = nx.node_link_graph(
        json.loads((tmp_path / "d" / "circuit.json").read_text()), edges="edges"
    )
    parallel = model_type in ("gpt_neox", "gptj", "phi")
    assert record["block_structure"] == ("parallel" if parallel else "sequential")
    assert graph.graph["parallel_attn_mlp"] is parallel
    for sender, receiver, data in graph.edges(
        data=True
    ):  # attention never feeds its own parallel MLP
        if parallel and data["path_type"] == "mlp_in":
            assert graph.nodes[sender]["layer"] < graph.nodes[receiver]["layer"], (sender, receiver)


def test_an_unsupported_folder_is_one_line_naming_its_model_type(tmp_path, capsys):
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(UsageError, match="model_type 't5' is not a causal language model"):
        load_model(str(tmp_path / "t5"), progress=False)
    import transformers  # a causal LM TransformerLens cannot convert (no attention at all)

    config = transformers.MambaConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, state_size=4
    )
    transformers.MambaForCausalLM(config).save_pretrained(tmp_path / "mamba")
    from _hf_helpers import tokenizer

    tokenizer().save_pretrained(tmp_path / "mamba")
    assert main(["measure", "--model", str(tmp_path / "mamba"), "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "model_type 'mamba'" in err[0] and "cannot be converted" in err[0]
    assert not (tmp_path / "o").exists()
