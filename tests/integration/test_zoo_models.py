"""The zoo against independent builds: the plain transformers model from the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.metrics.measure import measure_sinks
from circuits.prompts import default_text, prompt_set, tokenize_text
from circuits.zoo import convert
from circuits.zoo.load import load_model


def hf_reference(hf_model, tokens: torch.Tensor):
    """Logits, per-layer attention to P0 (queries >= 1, mean over heads) and per-layer
    residual norms at P0 / median of the rest, all read off the transformers model itself."""
    outputs: list[torch.Tensor] = []
    handles = [
        layer.register_forward_hook(
            lambda _m, _i, out: outputs.append(out[0] if isinstance(out, tuple) else out)
        )
        for layer in hf_model.model.layers
    ]
    try:
        with torch.no_grad():
            result = hf_model(tokens, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    attn = [a[:, :, 1:, 0].mean().item() for a in result.attentions]
    p0 = [o[:, 0].norm(dim=-1).mean().item() for o in outputs]
    rest = [o[:, 1:].norm(dim=-1).median().item() for o in outputs]
    return result.logits, attn, p0, rest


def assert_matches_hf(zm, hf_model, tokens: torch.Tensor, bos: bool) -> None:
    logits_hf, attn_hf, p0_hf, rest_hf = hf_reference(hf_model, tokens)
    with torch.no_grad():
        logits = zm.model(tokens)
    assert tokens.shape[1] >= 32
    assert (logits - logits_hf).abs().max().item() <= 1e-3
    report = measure_sinks(zm.model, tokens, bos=bos)
    assert report.column("attn_to_p0") == pytest.approx(attn_hf, abs=1e-4)
    assert report.column("p0_norm") == pytest.approx(p0_hf, rel=1e-4)
    assert report.column("rest_norm_median") == pytest.approx(rest_hf, rel=1e-4)


def test_smollm2_matches_transformers(smollm2):
    """SmolLM2 as the toolkit's HookedTransformer vs plain transformers from the same GGUF."""
    gguf = Path(smollm2.info["gguf"])
    hf_model = convert.load_hf_model(gguf.parent, gguf.name)
    tokens = tokenize_text(smollm2, default_text(), bos=False, max_tokens=64).tokens
    assert_matches_hf(smollm2, hf_model, tokens, bos=False)
    with_bos = tokenize_text(smollm2, default_text(), bos=True, max_tokens=40).tokens
    assert with_bos[0, 0].item() == smollm2.bos_token_id == 0  # <|endoftext|>
    assert_matches_hf(smollm2, hf_model, with_bos, bos=True)


def test_smollm2_generates_paris(smollm2):
    tokens = smollm2.encode("The capital of France is", bos=False)
    next_id = smollm2.model(tokens)[0, -1].argmax().item()
    assert smollm2.tokenizer.decode([next_id]).strip().startswith("Paris")


def test_smollm2_sink_facts(smollm2):
    """The paper's facts (docs/science.md) on SmolLM2 without BOS, at Gu et al.'s T = 64."""
    tokens = tokenize_text(smollm2, default_text(), bos=False, max_tokens=64).tokens
    report = measure_sinks(smollm2.model, tokens, bos=False)
    attn = report.column("attn_to_p0")
    assert max(attn[:2]) < 0.1  # no sink in layers 0-1
    assert min(attn[3:10]) > 0.25  # sink from layer 3 on
    assert max(attn[12:]) > 0.6
    norms = report.column("p0_norm")
    assert norms[1] > 3 * norms[0] and norms[2] > 10 * norms[0]  # the P0 norm jumps by layer 2
    assert report.column("p0_norm_ratio")[11] > 100  # the second (massive) jump at layer 11
    growth = (
        report.norm_growth
    )  # docs/measure.md: 0.7 -> 3.3 over blocks 0-1, the largest jump at 11
    assert growth.first_two_blocks > 4 and growth.largest_jump_layer == 11


def test_smollm2_p0_direction_is_input_invariant(smollm2):
    tokens = prompt_set(smollm2, n_prompts=4, n_tokens=24, bos=False)
    assert len({row[0].item() for row in tokens}) == 4  # four different first tokens
    eight = prompt_set(smollm2, n_prompts=8, n_tokens=64, bos=False)  # docs/python.md example
    assert len({row[0].item() for row in eight}) == 6  # 8 sentences, 6 first tokens ("The", "A")
    report = measure_sinks(smollm2.model, tokens, bos=False)
    cosines = report.column("p0_cosine")
    assert cosines[2] > 0.9  # after the MLP amplifier P0 points one way, whatever the token


def test_local_hf_folder_loads_like_transformers(smollm2, tmp_path):
    """A random-init Llama saved as a Hugging Face folder (rope base 5e5, GQA) loads exactly."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=smollm2.model.cfg.d_vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    reference = LlamaForCausalLM(config).eval()
    reference.save_pretrained(tmp_path / "tiny-llama")
    smollm2.tokenizer.save_pretrained(tmp_path / "tiny-llama")
    zm = load_model(str(tmp_path / "tiny-llama"), progress=False)
    assert zm.model.cfg.rotary_base == 500000.0
    hf_model = convert.load_hf_model(tmp_path / "tiny-llama")
    tokens = smollm2.encode(default_text()[:400], bos=False)[:, :48]
    assert_matches_hf(zm, hf_model, tokens, bos=False)


@pytest.fixture(scope="module")
def gemma3():
    return load_model("gemma3-270m", progress=False)


def test_gemma3_matches_transformers_and_has_bos_sink(gemma3):
    gguf = Path(gemma3.info["gguf"])
    hf_model = convert.load_hf_model(gguf.parent, gguf.name)
    with_bos = tokenize_text(gemma3, default_text(), bos=True, max_tokens=64).tokens
    assert with_bos[0, 0].item() == gemma3.bos_token_id == 2
    assert_matches_hf(gemma3, hf_model, with_bos, bos=True)
    no_bos = tokenize_text(gemma3, default_text(), bos=False, max_tokens=64).tokens
    assert_matches_hf(gemma3, hf_model, no_bos, bos=False)
    del hf_model
    sink_bos = measure_sinks(gemma3.model, with_bos, bos=True)
    sink_none = measure_sinks(gemma3.model, no_bos, bos=False)
    # with <bos>: a large sink and a huge P0 norm; without: no sink on P0
    assert max(sink_bos.column("attn_to_p0")) > 0.5
    assert sink_bos.column("p0_norm_ratio")[0] > 20  # P0 stands out from layer 0 on
    assert max(sink_bos.column("p0_norm")) > 50_000  # and grows to ~10^5
    assert max(sink_none.column("attn_to_p0")) < 0.1
    assert max(sink_none.column("p0_norm_ratio")) < 3
