"""bfloat16 does not change SmolLM2's circuit: the committed float32 discovery, repeated on the
same prompts with the model loaded in bfloat16, finds the same components (the faithfulness
curve and the prediction step, which select nothing, are skipped to save time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuits.circuit.config import DiscoverConfig
from circuits.circuit.discover import discover
from circuits.zoo.load import load_model

RECORD = Path(__file__).resolve().parents[2] / "results" / "smollm2-135m" / "discover"


def test_bfloat16_finds_smollm2s_float32_circuit():
    committed = json.loads((RECORD / "patching.json").read_text())
    assert committed["dtype"] == "float32"
    config = {**committed["config"], "curve": False, "prediction_random_sets": 0, "progress": False}
    zm = load_model("smollm2-135m", progress=False, dtype="bfloat16")
    tokens = torch.tensor(committed["tokens"])
    found = discover(zm.model, tokens, DiscoverConfig(**config), model_name=zm.name).result
    assert found.dtype == "bfloat16"
    assert sorted(found.circuit or []) == sorted(committed["circuit"])
    assert found.faithfulness is not None
    assert found.faithfulness.kept == pytest.approx(committed["faithfulness"]["kept"], abs=0.05)
