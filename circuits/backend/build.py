"""Models of the installed TransformerLens, built three ways, the same on 3.x and 4.x.

* ``model_from_config(fields, seed)``: a random-init model from TransformerLens config fields
  (``HookedTransformer(HookedTransformerConfig(...))`` on 3.x, ``TransformerBridge.boot_native``
  on 4.x; the two initialise differently, so one seed gives different weights on each);
* ``model_from_tl_weights(fields, state_dict)``: the same weights on both, from a
  ``HookedTransformer.state_dict()`` (4.x converts it with TransformerLens'
  ``convert_tl_checkpoint``);
* ``bridge_from_hf(hf_model, tokenizer, name)`` (4.x): a Hugging Face causal LM booted as a
  bridge (``TransformerBridge.boot_transformers(name, hf_model=...)``).

TransformerLens 4's native model (``boot_native``) builds standard or rotary positions, LN / RMS
(and their ``Pre`` forms) or no norm, MHA / GQA / MQA, gated or plain MLPs without gated biases,
attention-only stacks and score soft-capping. A structure outside that (``native_unsupported``)
is refused by name rather than built as something else; its rotary is adjacent-pair only, so a
NeoX-style rotary's query/key dimensions are reordered into adjacent pairs (the scores are the
same; ``hook_q`` / ``hook_k`` show the dimensions in that order).

Every bridge runs in compatibility mode with raw weights (``no_processing=True``): the legacy
hook names exist and the residual stream is the model's as trained, as with 3.x models loaded
without processing.
"""

from __future__ import annotations

from typing import Any

import torch

from circuits.backend import (
    ON_BRIDGE,
    POST_NORM_ARCHITECTURES,
    TL_VERSION,
    HookedModel,
    ModelConfig,
)
from circuits.backend.experts import expose_experts
from circuits.core.errors import UsageError

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


# config switches TransformerLens 4's native model does not build (field -> what it is)
_NATIVE_MISSING = {
    "use_local_attn": "local attention windows",
    "scale_attn_by_inverse_layer_idx": "scores scaled by 1 / layer index",
    "parallel_attn_mlp": "parallel attention + MLP blocks",
    "use_normalization_before_and_after": "norms before and after each sublayer",
    "use_qk_norm": "query / key norms",
    "use_attention_sinks": "learned attention sinks",
    "num_experts": "mixture-of-experts MLPs",
}


def native_unsupported(fields: dict[str, Any]) -> list[str]:
    """What in ``fields`` TransformerLens 4's native model cannot build (empty: all of it)."""
    reasons = []
    positions = fields.get("positional_embedding_type", "standard")
    if positions not in ("standard", "rotary"):
        reasons.append(f"positional_embedding_type={positions!r}")
    for field, what in _NATIVE_MISSING.items():
        if fields.get(field):
            reasons.append(f"{field} ({what})")
    if fields.get("original_architecture") in POST_NORM_ARCHITECTURES:
        reasons.append(f"original_architecture={fields['original_architecture']!r} (post-norm)")
    return reasons


def _refuse_unsupported(fields: dict[str, Any]) -> None:
    reasons = native_unsupported(fields)
    if reasons:
        raise UsageError(
            f"TransformerLens {TL_VERSION}'s native model cannot build {', '.join(reasons)}: "
            "build this structure on TransformerLens 3.x (pip install -e .), or load the "
            "family's Hugging Face folder"
        )


def model_from_config(fields: dict[str, Any], seed: int | None = None) -> Any:
    """A random-init model of the installed TransformerLens, in eval mode."""
    if seed is not None:
        fields = {**fields, "seed": seed}
        torch.manual_seed(seed)
    if not ON_BRIDGE:
        return expose_experts(HookedModel(model_config(fields), move_to_device=False).eval())
    _refuse_unsupported(fields)
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (registers boot_native)

    return _compatible(HookedModel.boot_native(model_config(fields)))


def model_from_tl_weights(fields: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Any:
    """A model with the weights of a ``HookedTransformer.state_dict()`` (the same numbers on
    3.x and 4.x: the parity tests' common ground)."""
    if not ON_BRIDGE:
        model = HookedModel(model_config(fields), move_to_device=False)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        params = dict(model.named_parameters())
        unset = [k for k in missing if k in params]
        if unset or unexpected:
            raise ValueError(
                f"weights do not fit the config: unset {unset[:4]}, unknown {unexpected[:4]}"
            )
        return expose_experts(model.eval())
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    bridge = model_from_config({**fields, "init_weights": False})
    cfg = bridge.cfg
    weights = {k: v for k, v in state_dict.items() if not k.endswith(("rotary_sin", "rotary_cos"))}
    weights = _without_gated_biases(weights, fields)
    if fields.get("positional_embedding_type") == "rotary" and not fields.get(
        "rotary_adjacent_pairs"
    ):
        weights = _interleaved_rotary(weights, fields)
    if not fields.get("use_attn_scale", True):
        weights = _unscaled_scores(weights, fields)
    converted = convert_tl_checkpoint(weights, cfg)
    missing, unexpected = bridge.load_state_dict(converted, strict=False)
    if unexpected:
        raise ValueError(f"TransformerLens 4 cannot place these weights: {unexpected[:4]}")
    return bridge.eval()


def _without_gated_biases(
    weights: dict[str, torch.Tensor], fields: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """A gated MLP's biases dropped when all zero; refused by name otherwise (TransformerLens
    4's gated MLP has none, like every gated family)."""
    if not fields.get("gated_mlp"):
        return weights
    out = {}
    for key, value in weights.items():
        if ".mlp.b_" in key:
            if value.abs().max() > 0:
                raise UsageError(
                    f"{key} is not zero, and TransformerLens {TL_VERSION}'s gated MLP has no "
                    "biases: zero them, or use TransformerLens 3.x (pip install -e .)"
                )
            continue
        out[key] = value
    return out


def _interleaved_rotary(
    weights: dict[str, torch.Tensor], fields: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Query / key weights with each head's NeoX rotary pairs ``(i, i + r/2)`` moved to
    adjacent dimensions ``(2i, 2i + 1)``, the only rotary TransformerLens 4's native model has:
    the same rotation, the same scores."""
    d_head = fields["d_head"]
    rotary = fields.get("rotary_dim") or d_head
    half = rotary // 2
    order = [j for i in range(half) for j in (i, i + half)] + list(range(rotary, d_head))
    perm = torch.tensor(order)
    out = dict(weights)
    for key, value in weights.items():
        if key.endswith(("attn.W_Q", "attn.W_K", "attn._W_K", "attn.b_Q", "attn.b_K", "attn._b_K")):
            out[key] = value.index_select(-1, perm)
    return out


def _unscaled_scores(
    weights: dict[str, torch.Tensor], fields: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Query weights times ``sqrt(d_head)``: TransformerLens 4's native attention always divides
    the scores by it, a ``use_attn_scale=False`` model never does."""
    factor = fields["d_head"] ** 0.5
    out = dict(weights)
    for key, value in weights.items():
        if key.endswith(("attn.W_Q", "attn.b_Q")):
            out[key] = value * factor
    return out


def bridge_from_hf(hf_model: Any, tokenizer: Any, name: str) -> Any:
    """A Hugging Face causal LM (float32, eager attention) as a bridge in compatibility mode
    with raw weights (TransformerLens 4 only)."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=torch.float32
    )
    return _compatible(bridge)


def hooked_with_weights_as_trained(
    cfg: Any, state_dict: dict[str, torch.Tensor], tokenizer: Any
) -> Any:
    """A TransformerLens 3 ``HookedTransformer`` with ``state_dict`` (TransformerLens format)
    loaded as trained: no layer-norm folding, centering or refactoring, so the residual stream
    and its norms are the model's own (the zoo's converters and local folders use it)."""
    model = HookedModel(
        cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right"
    )
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.eval()
