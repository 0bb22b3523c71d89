"""Small random-init ``HookedTransformer``s (seeded) for tests and quick experiments."""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuits.zoo.tokenizers import ByteTokenizer


def tiny_config(**overrides: Any) -> HookedTransformerConfig:
    """A 2-layer llama-style config (RMSNorm, rotary, gated SiLU MLP) for tests; override freely."""
    base: dict[str, Any] = dict(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        n_ctx=128,
        d_vocab=ByteTokenizer.vocab_size,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        final_rms=True,
        default_prepend_bos=False,
        init_weights=True,
        dtype=torch.float32,
        device="cpu",
    )
    base.update(overrides)
    return HookedTransformerConfig(**base)


def tiny_model(seed: int = 0, **cfg_overrides: Any) -> HookedTransformer:
    """A small random-init HookedTransformer (seeded): 2 layers, d_model 32 unless overridden."""
    cfg = tiny_config(seed=seed, **cfg_overrides)
    torch.manual_seed(seed)
    return HookedTransformer(cfg, move_to_device=False).eval()
