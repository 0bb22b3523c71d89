"""Small random-init models (seeded) for tests and quick experiments: ``HookedTransformer``s on
TransformerLens 3.x, native ``TransformerBridge``s on 4.x (``circuits.backend.build``)."""

from __future__ import annotations

from typing import Any

import torch

from circuits.backend import HookedModel, ModelConfig
from circuits.backend.build import model_config, model_from_config
from circuits.core.arguments import Index, checked
from circuits.zoo.shapes import TINY_SHAPE


def tiny_fields(**overrides: Any) -> dict[str, Any]:
    """The TransformerLens config fields of ``tiny_config``."""
    base: dict[str, Any] = dict(
        **TINY_SHAPE,
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
    return base


def tiny_config(**overrides: Any) -> ModelConfig:
    """A 2-layer llama-style config (RMSNorm, rotary, gated SiLU MLP) for tests; override freely."""
    return model_config(tiny_fields(**overrides))


@checked
def tiny_model(seed: Index = 0, **cfg_overrides: Any) -> HookedModel:
    """A small random-init model (seeded): 2 layers, d_model 32 unless overridden."""
    return model_from_config(tiny_fields(**cfg_overrides), seed=seed)
