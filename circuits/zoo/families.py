"""Local Hugging Face folders of every family TransformerLens converts, with its own converters.

``hooked_from_folder`` turns a float32 ``transformers`` model read from a folder into a
HookedTransformer with the residual stream as trained (no centering, folding or refactoring):

* **llama** and **gemma3** keep their dedicated paths (``circuits.zoo.convert``), which also
  serve the GGUF zoo models;
* **OLMo**, **OLMo 2** and **Phi**: TransformerLens 3.x converts their weights
  (``convert_olmo_weights``, ``convert_olmo2_weights``, ``convert_phi_weights``) but maps the
  OLMo configs only for its official names and reads Phi's rotary fraction from a field
  transformers 5 no longer has, so their config is mapped here from the folder's own config;
* **every other family** (GPT-2, GPT-J, GPT-NeoX/Pythia, Mistral, Qwen 2/3, Phi, Bloom, ...):
  TransformerLens' own config mapping (``get_pretrained_model_config``) and weight converter
  (``get_pretrained_state_dict``) read the folder. Two fields that transformers 5 no longer
  stores (GPT-2's ``n_ctx``) is handed to it from the config.

A folder whose family TransformerLens cannot convert is a one-line ``UsageError`` naming its
``model_type``. ``circuits.zoo.pins.VERIFIED_FAMILIES`` lists the families whose conversion is tested against
``transformers`` (tests/integration/test_hf_families.py: logits within 1e-4).
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import torch

from circuits.backend import HookedModel, ModelConfig
from circuits.backend.build import hooked_with_weights_as_trained
from circuits.core.errors import UsageError


def _rope(hf_config: Any) -> dict[str, Any]:
    return getattr(hf_config, "rope_parameters", None) or {}


def _phi_config(hf_config: Any) -> dict[str, Any]:
    """TransformerLens' Phi (1/1.5/2) config with the rotary fraction read where transformers 5
    keeps it (``rope_parameters``; TL 3.x reads a field that is gone)."""
    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    factor = getattr(hf_config, "partial_rotary_factor", None) or _rope(hf_config).get(
        "partial_rotary_factor", 0.5
    )
    return {
        "d_model": hf_config.hidden_size,
        "d_head": d_head,
        "n_heads": hf_config.num_attention_heads,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "eps": hf_config.layer_norm_eps,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.hidden_act,
        "initializer_range": hf_config.initializer_range,
        "normalization_type": "LN",
        "positional_embedding_type": "rotary",
        "rotary_base": float(_rope(hf_config).get("rope_theta", 10000.0)),
        "rotary_dim": round(factor * d_head),
        "use_attn_scale": True,
        "parallel_attn_mlp": True,
        "original_architecture": "PhiForCausalLM",
    }


def _olmo_config(hf_config: Any, architecture: str) -> dict[str, Any]:
    """TransformerLens' OLMo / OLMo 2 config, read from the folder's config (TL maps these only
    for its official names); the values mirror TL's own OLMo entries."""
    olmo2 = architecture == "Olmo2ForCausalLM"
    n_kv = getattr(hf_config, "num_key_value_heads", None)
    return {
        "d_model": hf_config.hidden_size,
        "d_head": hf_config.hidden_size // hf_config.num_attention_heads,
        "n_heads": hf_config.num_attention_heads,
        "n_key_value_heads": n_kv if n_kv and n_kv != hf_config.num_attention_heads else None,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "eps": getattr(hf_config, "rms_norm_eps", 1e-5) if olmo2 else 1e-5,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.hidden_act,
        "initializer_range": hf_config.initializer_range,
        "normalization_type": "RMS" if olmo2 else "LN",
        "rotary_base": float(
            _rope(hf_config).get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
        ),
        "attn_types": ["global"] * hf_config.num_hidden_layers,
        "positional_embedding_type": "rotary",
        "gated_mlp": True,
        "clip_qkv": getattr(hf_config, "clip_qkv", None),
        "original_architecture": architecture,
    }


def missing_config_fields(hf_config: Any) -> dict[str, Any]:
    """Config fields TransformerLens 3.x reads from a folder's ``config.json`` that configs
    written by transformers 5 lack (GPT-2's ``n_ctx``); the loader adds them to the copy of
    ``config.json`` TransformerLens reads (the user's folder is never written)."""
    if hf_config.model_type == "gpt2" and not hasattr(hf_config, "n_ctx"):
        return {"n_ctx": hf_config.n_positions}
    return {}


def transformer_lens_config(folder: Path, hf_config: Any, n_ctx: int) -> ModelConfig:
    """The HookedTransformerConfig of a local folder, mapped by TransformerLens (or, for OLMo,
    here); ``UsageError`` naming the ``model_type`` when TransformerLens cannot map it."""
    import transformer_lens.loading_from_pretrained as tl_loading

    architecture = (getattr(hf_config, "architectures", None) or ["?"])[0]
    common = {"device": "cpu", "dtype": torch.float32, "default_prepend_bos": False}
    try:
        if architecture in ("OlmoForCausalLM", "Olmo2ForCausalLM"):
            cfg = ModelConfig(**_olmo_config(hf_config, architecture), **common)
        elif architecture == "PhiForCausalLM":
            cfg = ModelConfig(**_phi_config(hf_config), **common)
        else:
            cfg = tl_loading.get_pretrained_model_config(str(folder), fold_ln=False, **common)
    except (NotImplementedError, ValueError, AttributeError, KeyError, TypeError) as err:
        version = importlib.metadata.version("transformer-lens")
        raise UsageError(
            f"{folder}: model_type '{hf_config.model_type}' ({architecture}) cannot be converted "
            f"by TransformerLens {version} ({type(err).__name__}: {str(err)[:120]})"
        ) from None
    cfg.n_ctx = min(cfg.n_ctx, n_ctx)
    cfg.init_weights = False
    return cfg


def hooked_from_folder(folder: Path, hf_model: Any, tokenizer: Any, n_ctx: int) -> HookedModel:
    """A HookedTransformer from a local folder's ``transformers`` model, with TransformerLens'
    own weight converter and no processing that changes the residual stream."""
    import transformer_lens.loading_from_pretrained as tl_loading

    cfg = transformer_lens_config(folder, hf_model.config, n_ctx)
    if tokenizer is None:  # a model measured on token ids only (the live monitor)
        cfg.tokenizer_name = None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        state_dict = tl_loading.get_pretrained_state_dict(str(folder), cfg, hf_model=hf_model)
    except (NotImplementedError, ValueError, AttributeError, KeyError) as err:
        raise UsageError(
            f"{folder}: the weights of model_type '{hf_model.config.model_type}' cannot be "
            f"converted by TransformerLens ({type(err).__name__}: {str(err)[:120]})"
        ) from None
    if cfg.positional_embedding_type == "standard" and "pos_embed.W_pos" in state_dict:
        state_dict["pos_embed.W_pos"] = state_dict["pos_embed.W_pos"][: cfg.n_ctx]
    return hooked_with_weights_as_trained(cfg, state_dict, tokenizer)
