"""The zoo's registry and name resolution (no real model loaded here)."""

from __future__ import annotations

import importlib.metadata
import json
from importlib.resources import files

import pytest

from circuits.core.errors import UnknownModelError, UsageError
from circuits.zoo.load import load_model
from circuits.zoo.names import resolve_model, tl_alias_map
from circuits.zoo.pins import ZOO, list_zoo
from circuits.zoo.tokenizers import ByteTokenizer


def test_unknown_model_lists_the_zoo():
    with pytest.raises(UnknownModelError, match="smollm2-135m, gemma3-270m") as info:
        load_model("no-such-model", progress=False)
    assert "p0-circuits models" in str(info.value)


def test_existing_path_that_is_no_model(tmp_path):
    with pytest.raises(UsageError, match="neither a .gguf file"):
        load_model(str(tmp_path), progress=False)


def test_list_zoo_rows():
    rows = {row["name"]: row for row in list_zoo()}
    assert set(rows) == set(ZOO)
    assert rows["smollm2-135m"]["size_mb"] == pytest.approx(98.4, abs=0.1)
    assert rows["gemma3-270m"]["size_mb"] == pytest.approx(253.1, abs=0.1)
    assert "without BOS" in rows["smollm2-135m"]["bos_regime"]
    assert "with <bos>" in rows["gemma3-270m"]["bos_regime"]


def test_tiny_model_and_explicit_bos():
    zm = load_model("tiny", progress=False)
    assert zm.model.cfg.n_layers == 2
    assert zm.encode("ab", bos=False).tolist() == [[97, 98]]
    assert zm.encode("ab", bos=True).tolist() == [[ByteTokenizer.bos_token_id, 97, 98]]
    assert zm.str_tokens([256, 97]) == ["<bos>", "a"]


def test_names_resolve_without_loading(tmp_path):
    assert resolve_model("smollm2-135m").kind == "zoo"
    assert resolve_model("gpt2").kind == "transformer_lens"
    assert resolve_model("GPT2-small").name == "gpt2"  # TransformerLens aliases, any case
    (tmp_path / "m.gguf").write_bytes(b"x")
    assert resolve_model(str(tmp_path / "m.gguf")).kind == "gguf"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    assert resolve_model(str(tmp_path / "run")).kind == "run"


def test_the_transformer_lens_name_snapshot_matches_the_installed_version():
    """The snapshot that lets the CLI reject an unknown name without importing TransformerLens
    must be TransformerLens' own map for the installed version (refresh it when TL changes)."""
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    snap = json.loads(files("circuits.zoo").joinpath("data/tl_model_names.json").read_text())
    assert snap["transformer_lens"] == importlib.metadata.version("transformer-lens"), (
        "refresh circuits/zoo/data/tl_model_names.json for this TransformerLens version"
    )
    assert snap["aliases"] == make_model_alias_map()
    assert tl_alias_map() == make_model_alias_map()


def test_device_is_checked_before_the_model_loads(tmp_path, monkeypatch):
    """``--device``: a bad name fails before torch is imported, a GPU torch cannot see fails
    before the load (no conversion wasted), and ``cpu`` / ``auto`` put every weight on one device."""
    import torch

    from circuits.cli import main

    zm = load_model("tiny", progress=False, device="cpu")
    assert {p.device.type for p in zm.model.parameters()} == {"cpu"}
    auto = load_model("tiny", progress=False, device="auto")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert {p.device.type for p in auto.model.parameters()} == {want}
    out = tmp_path / "m"
    assert main(["measure", "--model", "tiny", "--device", "gpu0", "--out", str(out)]) == 2
    assert not out.exists()
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-GPU message cannot be checked here")
    calls = []
    monkeypatch.setattr("circuits.zoo.load._from_zoo", lambda *a: calls.append(a))
    with pytest.raises(UsageError, match="torch sees no GPU; use --device cpu"):
        load_model("smollm2-135m", progress=False, device="cuda")
    assert calls == []
    assert main(["discover", "--model", "tiny", "--device", "cuda:1", "--out", str(out)]) == 2
    assert not out.exists()
