"""``p0-circuits plan`` sizes a model from its shape alone; its parameter counts equal the
models themselves, it reads a Hugging Face config.json, and a plan that cannot fit is refused
with the smallest one that does. The GPU check runs here at small sizes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3MoeConfig

from circuits.cli import main
from circuits.patching.plan import LOGIT_CHUNK_VALUES, logit_chunks, plan
from circuits.zoo.shapes import PUBLISHED_SHAPES, shape_of
from circuits.zoo.tiny import tiny_model

ROOT = Path(__file__).resolve().parents[2]


def _n_params(model: torch.nn.Module) -> int:
    """Weight matrices (norms and TransformerLens' zero biases aside)."""
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.ndim > 1 and not n.rsplit(".", 1)[-1].startswith("b_")
    )


def test_a_zoo_shape_counts_the_built_models_parameters():
    shape = shape_of("tiny")
    assert shape.n_params == _n_params(tiny_model())


@pytest.mark.parametrize("moe", [False, True])
def test_a_config_json_counts_the_transformers_models_parameters(tmp_path, moe):
    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, vocab_size=300, tie_word_embeddings=False)  # fmt: skip
    if moe:
        cfg = Qwen3MoeConfig(**common, num_experts=4, num_experts_per_tok=2,
                             moe_intermediate_size=32, intermediate_size=96)  # fmt: skip
    else:
        cfg = LlamaConfig(**common, intermediate_size=96)
    cfg.save_pretrained(tmp_path)
    shape = shape_of(str(tmp_path))
    hf = AutoModelForCausalLM.from_config(cfg)
    assert shape.n_params == _n_params(hf)
    if moe:
        assert shape.active_params < shape.n_params


def test_published_shapes_have_their_names_parameter_counts():
    billions = {name: s.n_params / 1e9 for name, s in PUBLISHED_SHAPES.items()}
    assert billions["llama-3.1-8b"] == pytest.approx(8.03, abs=0.01)
    assert billions["llama-3.1-70b"] == pytest.approx(70.55, abs=0.05)
    assert billions["qwen3-30b-a3b"] == pytest.approx(30.5, abs=0.1)
    assert PUBLISHED_SHAPES["qwen3-30b-a3b"].active_params / 1e9 == pytest.approx(3.3, abs=0.1)


@pytest.mark.parametrize(
    "n_prompts, n_positions, d_vocab",
    [(8, 64, 262_144), (8, 64, 49_152), (5, 2048, 151_936), (1, 4096, 262_144), (64, 1, 2)],
)
def test_the_logit_pieces_cover_every_prompt_once_within_the_budget(
    n_prompts, n_positions, d_vocab
):
    pieces = logit_chunks(n_prompts, n_positions, d_vocab)
    covered = [i for p in pieces for i in range(n_prompts)[p]]
    assert covered == list(range(n_prompts))
    for p in pieces:  # a piece past the budget is one prompt that alone exceeds it
        size = p.stop - p.start
        assert size * n_positions * d_vocab <= LOGIT_CHUNK_VALUES or size == 1
    # as few pieces as the budget allows: two neighbours would not fit in one
    for a, b in itertools.pairwise(pieces):
        assert (b.stop - a.start) * n_positions * d_vocab > LOGIT_CHUNK_VALUES


def test_half_precision_halves_the_weights_and_a_misfit_names_the_smallest_fit(capsys):
    shape = PUBLISHED_SHAPES["llama-3.1-8b"]
    on_card = dict(card_gb=80.0)
    assert plan(shape, dtype="bfloat16", **on_card).weights * 2 == plan(shape, **on_card).weights
    # on the CPU a float32 load maps the cache: the embedding's rows are not resident, nor the
    # unembedding until the prediction step reads it
    table = shape.d_vocab * shape.d_model
    assert plan(shape).weights == 4 * (shape.resident_params - table)
    assert plan(shape, prediction=False).weights == 4 * (shape.resident_params - 2 * table)
    assert plan(shape, prediction=False).logits == 0
    assert main(["plan", "--model", "llama-3.1-70b", "--gpus", "1", "--gpu-memory", "80"]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "--dtype bfloat16 --gpus 2" in err
    assert main(["plan", "--model", "smollm2-135m", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["rows_per_forward"] == 64 and row["weights_gb"] == pytest.approx(0.5, abs=0.01)
    assert main(["plan", "--model", "no-such-model"]) == 2


def test_the_gpu_check_runs_at_small_sizes_on_a_cpu():
    out = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--small"],
        capture_output=True, text=True, timeout=300, check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["float32_device_vs_cpu"]["effect_max_abs_diff"] == 0.0  # the same device here
    assert result["bfloat16_vs_float32"]["effect_max_abs_diff"] < 0.05
    assert result["shape_1b_bfloat16"]["plan_peak_gb"] > 0
    assert result["panel_click_to_exact_s"] > 0
