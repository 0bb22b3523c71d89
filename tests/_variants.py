"""The structure matrix: a tiny random-init model of every block structure TransformerLens builds
(shared by ``test_architectures`` and ``test_stream``)."""

from __future__ import annotations

from typing import Any

import torch

from circuits.patching import Site

N_LAYERS = 3
BASE = dict(
    n_layers=N_LAYERS,
    d_model=32,
    n_heads=4,
    d_head=8,
    d_mlp=64,
    n_ctx=32,
    d_vocab=64,
    act_fn="gelu",
    normalization_type="LN",
    positional_embedding_type="standard",
    default_prepend_bos=False,
    device="cpu",
    seed=0,
)
ROTARY = dict(positional_embedding_type="rotary", rotary_dim=8)
VARIANTS = {
    "LN, learned positions (GPT-2)": {},
    "RMS, rotary, gated SiLU (Llama)": dict(
        ROTARY, normalization_type="RMS", final_rms=True, gated_mlp=True, act_fn="silu"
    ),
    "partial rotary, adjacent pairs (GPT-J)": dict(
        ROTARY, rotary_dim=4, rotary_adjacent_pairs=True
    ),
    "no normalization": dict(normalization_type=None),
    "folded norms (LNPre)": dict(normalization_type="LNPre"),
    "norms before and after (Gemma 2/3)": dict(
        ROTARY, normalization_type="RMS", use_normalization_before_and_after=True
    ),
    "post-norm blocks (OLMo 2)": dict(
        ROTARY,
        normalization_type="RMS",
        original_architecture="Olmo2ForCausalLM",
        gated_mlp=True,
        act_fn="silu",
    ),
    "shortformer positions": dict(positional_embedding_type="shortformer"),
    "ALiBi": dict(positional_embedding_type="alibi"),
    "parallel attention + MLP (GPT-NeoX / Pythia)": dict(
        ROTARY, rotary_dim=4, parallel_attn_mlp=True
    ),
    "attention-only": dict(attn_only=True),
    "attention-only, shortformer (TL toy models)": dict(
        attn_only=True, positional_embedding_type="shortformer"
    ),
    "mixture-of-experts MLP": dict(
        num_experts=4, experts_per_token=2, gated_mlp=True, act_fn="silu"
    ),
    "grouped-query attention": dict(ROTARY, n_key_value_heads=2),
    "multi-query attention": dict(ROTARY, n_key_value_heads=1),
    "no biases": dict(ROTARY, normalization_type="RMS"),
    "attention score softcap (Gemma 2)": dict(ROTARY, attn_scores_soft_cap=2.0),
    "local / global attention windows": dict(
        ROTARY, use_local_attn=True, attn_types=["local", "global", "local"], window_size=3
    ),
    "split QKV inputs on": dict(use_split_qkv_input=True),
    "query-key norms (Qwen 3 / OLMo 2)": dict(ROTARY, normalization_type="RMS", use_qk_norm=True),
    "learned attention sinks (GPT-OSS)": dict(ROTARY, use_attention_sinks=True),
}
NO_BIASES = {"no biases"}


def build(name: str) -> Any:
    """The variant's tiny ``HookedTransformer`` (TransformerLens 3.x), biases and query/key
    weights scaled so that attention is far from uniform."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(
        HookedTransformerConfig(**{**BASE, **VARIANTS[name]}), move_to_device=False
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if name in NO_BIASES and (".b_" in pname or pname.endswith(".b")):
                p.zero_()
            elif pname.startswith("blocks") and (".b_" in pname or "sinks" in pname):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif ".W_Q" in pname or ".W_K" in pname:  # far from uniform attention
                p.mul_(4)
    return model.eval()


def p0_sites(cfg) -> list[Site]:
    """Every single-site patch at P0 a model of ``cfg`` offers: the embedding, each layer's
    residual streams, attention and MLP outputs, and every head."""
    sites = [Site("embed")]
    for la in range(cfg.n_layers):
        sites += [Site("resid_pre", la), Site("attn", la), Site("resid_post", la)]
        if not cfg.attn_only:
            sites.append(Site("mlp", la))
            if not cfg.parallel_attn_mlp:
                sites.append(Site("resid_mid", la))
        sites += [Site("head", la, head=h) for h in range(cfg.n_heads)]
    return sites
