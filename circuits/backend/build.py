"""Models of the installed TransformerLens, built three ways, the same on 3.x and 4.x.

* ``model_from_config(fields, seed)``: a random-init model from TransformerLens config fields
  (``HookedTransformer(HookedTransformerConfig(...))`` on 3.x, ``TransformerBridge.boot_native``
  on 4.x; the two initialise differently, so one seed gives different weights on each);
* ``model_from_tl_weights(fields, state_dict)``: the same weights on both, from a
  ``HookedTransformer.state_dict()`` (4.x converts it with TransformerLens'
  ``convert_tl_checkpoint``);
* ``bridge_from_hf(hf_model, tokenizer, name)`` (4.x): a Hugging Face causal LM booted as a
  bridge (``TransformerBridge.boot_transformers(name, hf_model=...)``).

Every bridge runs in compatibility mode with raw weights (``no_processing=True``): the legacy
hook names exist and the residual stream is the model's as trained, as with 3.x models loaded
without processing.
"""

from __future__ import annotations

from typing import Any

import torch

from circuits.backend import ON_BRIDGE, HookedModel, ModelConfig

# HookedTransformerConfig fields a TransformerBridgeConfig has no use for (3.x-only switches)
_HOOKED_ONLY = ("move_to_device", "ungroup_grouped_query_attention")


def _compatible(model: Any) -> Any:
    model.enable_compatibility_mode(no_processing=True)
    return model.eval()


def model_config(fields: dict[str, Any]) -> Any:
    """The installed version's config from TransformerLens config fields."""
    if ON_BRIDGE:
        fields = {k: v for k, v in fields.items() if k not in _HOOKED_ONLY}
    return ModelConfig(**fields)


def model_from_config(fields: dict[str, Any], seed: int | None = None) -> Any:
    """A random-init model of the installed TransformerLens, in eval mode."""
    if seed is not None:
        fields = {**fields, "seed": seed}
        torch.manual_seed(seed)
    if not ON_BRIDGE:
        return HookedModel(model_config(fields), move_to_device=False).eval()
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (registers boot_native)

    return _compatible(HookedModel.boot_native(model_config(fields)))


def model_from_tl_weights(fields: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Any:
    """A model with the weights of a ``HookedTransformer.state_dict()`` (the same numbers on
    3.x and 4.x: the parity tests' common ground)."""
    if not ON_BRIDGE:
        model = HookedModel(model_config(fields), move_to_device=False)
        model.load_state_dict(state_dict, strict=False)
        return model.eval()
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    bridge = model_from_config({**fields, "init_weights": False})
    cfg = bridge.cfg
    weights = {k: v for k, v in state_dict.items() if not k.endswith(("rotary_sin", "rotary_cos"))}
    converted = convert_tl_checkpoint(weights, cfg)
    missing, unexpected = bridge.load_state_dict(converted, strict=False)
    if unexpected:
        raise ValueError(f"TransformerLens 4 cannot place these weights: {unexpected[:4]}")
    return bridge.eval()


def bridge_from_hf(hf_model: Any, tokenizer: Any, name: str) -> Any:
    """A Hugging Face causal LM (float32, eager attention) as a bridge in compatibility mode
    with raw weights (TransformerLens 4 only)."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=torch.float32
    )
    return _compatible(bridge)
