"""What the toolkit needs from TransformerLens, on 3.x and on 4.x: the one backend boundary.

TransformerLens 3.x models are ``HookedTransformer``s. TransformerLens 4.0 removed that class:
models are ``TransformerBridge``s, which carry the legacy hook names (``hook_resid_pre``,
``attn.hook_z``, ``hook_k_input``, ...) after ``enable_compatibility_mode()``. The toolkit
boots every bridge in compatibility mode with ``no_processing=True`` (raw weights: the residual
stream as trained, as on 3.x) and reads the rest through this package:

* ``HookedModel`` / ``ModelConfig``: the model and config classes of the installed version;
* ``get_act_name``, ``ActivationCache``, ``POST_NORM_ARCHITECTURES``: the same on both;
* ``circuits.backend.build``: models from TransformerLens-format weights (tiny and trained
  models) and from Hugging Face models (the zoo's GGUF weights, local folders);
* ``require_hooked_transformer``: a feature that exists only on 3.x is refused by name.

Nothing else in ``circuits`` imports a model class from ``transformer_lens``.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from transformer_lens import ActivationCache
from transformer_lens.utilities import get_act_name
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

from circuits.core.errors import UsageError

TL_VERSION = version("transformer-lens")
TL_MAJOR = int(TL_VERSION.split(".")[0])
ON_BRIDGE = TL_MAJOR >= 4

if ON_BRIDGE:
    from transformer_lens.config import TransformerBridgeConfig as ModelConfig
    from transformer_lens.model_bridge import TransformerBridge as HookedModel
else:
    from transformer_lens import HookedTransformer as HookedModel  # type: ignore[assignment]
    from transformer_lens import HookedTransformerConfig as ModelConfig  # type: ignore[assignment]


RESUMES_FROM_RESIDUAL = not ON_BRIDGE
"""Whether ``run_with_hooks(resid, start_at_layer=l)`` runs blocks ``l..`` from a residual
without recomputing the blocks below. A TransformerLens 4 bridge runs the whole Hugging Face
forward from the tokens whatever ``start_at_layer`` says, so the engine runs every row from the
tokens there and writes a patch's start rows over ``resid_pre`` at its start block instead
(the same numbers, more blocks computed)."""


SPLIT_INPUT_HOOKS = not ON_BRIDGE
"""Whether the model can split its attention inputs per head (``use_split_qkv_input``:
``hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` of shape ``[batch, pos, head,
d_model]``) and expose the MLP input (``use_hook_mlp_in``). A bridge's split is not per head,
so path patching recomputes a receiver's query / key / value (or MLP output) from its patched
input instead (``circuits.patching.paths``): the same numbers, one extra forward per group."""


def attention_scale(model: Any, layer: int) -> float:
    """The number the attention scores of block ``layer`` are divided by (``sqrt(d_head)``
    unless the model says otherwise: a config's ``attn_scale``, Gemma's query pre-scaling)."""
    attn = model.blocks[layer].attn
    if not ON_BRIDGE:
        return float(attn.attn_scale)
    original = getattr(attn, "original_component", None)
    scaling = getattr(original, "scaling", None)
    if scaling is not None:
        return 1.0 / float(scaling)
    scale = getattr(original, "scale", None)
    if scale is not None:
        return float(scale)
    cfg = model.cfg
    if not getattr(cfg, "use_attn_scale", True):
        return 1.0
    given = getattr(cfg, "attn_scale", None)
    return float(given) if given is not None and given > 0 else float(cfg.d_head**0.5)


def require_hooked_transformer(what: str) -> None:
    """Refuse ``what`` on TransformerLens 4 with the fix (install 3.x)."""
    if ON_BRIDGE:
        raise UsageError(
            f"{what} needs TransformerLens 3.x (HookedTransformer); TransformerLens "
            f"{TL_VERSION} is installed: install the default environment "
            "(pip install -e . pins transformer-lens>=3.9,<4) for it"
        )


def learned_attention_sinks(cfg: Any) -> bool:
    """Whether the attention softmax has learned sink logits (gpt-oss's ``use_attention_sinks``;
    a TransformerLens 4 bridge's config has no such field: there the architecture says it)."""
    if getattr(cfg, "use_attention_sinks", False):
        return True
    arch = getattr(cfg, "original_architecture", None) or getattr(cfg, "architecture", None)
    return arch == "GptOssForCausalLM"


def kv_inputs_grouped(cfg: Any) -> bool:
    """Whether ``hook_k_input`` / ``hook_v_input`` hold one input per key/value head (GQA
    without ``ungroup_grouped_query_attention``; always so on a TransformerLens 4 bridge,
    which has no ungrouping) rather than one per query head."""
    grouped = cfg.n_key_value_heads is not None and cfg.n_key_value_heads != cfg.n_heads
    return grouped and not getattr(cfg, "ungroup_grouped_query_attention", False)


def is_model(obj: Any) -> bool:
    """Whether ``obj`` is a model of the installed TransformerLens (HookedTransformer / bridge)."""
    return isinstance(obj, HookedModel)


__all__ = [
    "ON_BRIDGE",
    "RESUMES_FROM_RESIDUAL",
    "SPLIT_INPUT_HOOKS",
    "TL_MAJOR",
    "TL_VERSION",
    "ActivationCache",
    "HookedModel",
    "ModelConfig",
    "attention_scale",
    "POST_NORM_ARCHITECTURES",
    "get_act_name",
    "is_model",
    "kv_inputs_grouped",
    "learned_attention_sinks",
    "require_hooked_transformer",
]
