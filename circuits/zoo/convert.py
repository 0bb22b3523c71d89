"""Hugging Face causal LMs -> HookedTransformer, with the residual stream exactly as trained.

This is the one place that builds models from foreign weights. On TransformerLens 4 the
same entry point boots a ``TransformerBridge`` around the transformers model instead
(``circuits.backend.build.bridge_from_hf``, compatibility mode with raw weights). No weight processing
that changes the residual stream is applied: no centering of writing weights or of the
unembedding, no folding of value biases, and layer norms are kept as they are.

The float32 cache of converted models is ``circuits.zoo.converted``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from circuits.backend import ON_BRIDGE, HookedModel, ModelConfig
from circuits.backend.build import bridge_from_hf, hooked_with_weights_as_trained
from circuits.core.errors import UsageError
from circuits.zoo.families import hooked_from_folder

# Attention masks are n_ctx x n_ctx buffers per layer: cap the context we build for, so that a
# 30-layer model does not allocate gigabytes of masks for an 8k context nobody measures here.
MAX_CONTEXT = 2048

SUPPORTED_ARCHITECTURES = ("llama", "gemma3 / gemma3_text")


def _offline_env() -> None:
    """Local conversions never need the hub: say so, unless the user opted in to it."""
    if not os.environ.get("P0_CIRCUITS_ONLINE"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_hf_tokenizer(folder: Path, gguf_file: str | None = None):
    """Load a tokenizer and re-save it to a plain folder (TransformerLens re-creates tokenizers
    from ``name_or_path``, which must then be a real local path)."""
    from transformers import AutoTokenizer

    files = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    if gguf_file is None and not any((folder / f).is_file() for f in files):
        raise UsageError(
            f"{folder} has no tokenizer (none of {', '.join(files)}): save one into it, e.g. "
            "tokenizer.save_pretrained(folder) with the tokenizer the model was trained with"
        )
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    if len(tok) == 0 or not tok("The", add_special_tokens=False)["input_ids"]:
        raise UsageError(
            f"{folder}'s tokenizer is empty (it encodes text to no tokens): save the model's "
            "tokenizer into the folder (tokenizer.save_pretrained(folder))"
        )
    return tok


def load_hf_model(folder: Path, gguf_file: str | None = None, *, eager: bool = True):
    """The plain transformers model (float32, eval mode); GGUF files are dequantized here."""
    from transformers import AutoModelForCausalLM

    _offline_env()
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if eager:
        kwargs["attn_implementation"] = "eager"
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except (ValueError, KeyError, OSError) as err:
        what = gguf_file or "config.json"
        raise UsageError(
            f"transformers cannot load a causal LM from {Path(folder) / what} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:160]})"
        ) from None
    return model.eval()


def _model_type(hf_model) -> str:
    return getattr(hf_model.config, "model_type", "unknown")


def llama_config(hf_config, n_ctx: int) -> ModelConfig:
    """HookedTransformerConfig for a Llama-architecture HF config (SmolLM2 among them).

    ``rotary_base`` comes from the checkpoint's rope theta (the generic mapping would default to
    10000, which silently breaks SmolLM2's rope base of 100000).
    """
    rope = getattr(hf_config, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    head_dim = getattr(hf_config, "head_dim", None) or (
        hf_config.hidden_size // hf_config.num_attention_heads
    )
    n_kv = hf_config.num_key_value_heads
    return ModelConfig(
        d_model=hf_config.hidden_size,
        d_head=head_dim,
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=n_ctx,
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        n_key_value_heads=n_kv if n_kv != hf_config.num_attention_heads else None,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=head_dim,
        rotary_base=float(rope_theta),
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        tokenizer_prepends_bos=False,
        dtype=torch.float32,
        device="cpu",
    )


def _gemma3_official_name(hf_config) -> str:
    """TransformerLens' official Gemma 3 name whose shape matches ``hf_config``."""
    from transformer_lens.loading_from_pretrained import (
        OFFICIAL_MODEL_NAMES,
        get_pretrained_model_config,
    )

    for name in OFFICIAL_MODEL_NAMES:
        if "gemma-3-" not in name or "medgemma" in name:
            continue
        try:
            cfg = get_pretrained_model_config(name)
        except Exception:  # noqa: BLE001 - configs that need the hub are skipped offline
            continue
        if cfg.d_model == hf_config.hidden_size and cfg.n_layers == hf_config.num_hidden_layers:
            return name
    raise UsageError(
        f"no TransformerLens Gemma 3 config matches d_model={hf_config.hidden_size}, "
        f"n_layers={hf_config.num_hidden_layers}"
    )


def hf_to_hooked(
    hf_model, tokenizer, tokenizer_dir: Path, folder: Path | None = None
) -> HookedModel:
    """Convert a float32 HF causal LM into a HookedTransformer (no residual-changing processing).

    ``tokenizer_dir`` is a local folder the tokenizer is saved to (TransformerLens reloads it).
    ``folder`` (a local Hugging Face folder holding the model's config) lets every family
    TransformerLens converts load (``circuits.zoo.families``); llama and gemma3 have their own
    paths here, which also serve GGUF files.
    """
    from transformers import AutoTokenizer

    if ON_BRIDGE:
        name = getattr(hf_model.config, "_name_or_path", "") or _model_type(hf_model)
        return bridge_from_hf(hf_model, tokenizer, str(name))
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    tokenizer.save_pretrained(str(tokenizer_dir))
    local_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model_type = _model_type(hf_model)
    if model_type == "llama":
        n_ctx = min(hf_model.config.max_position_embeddings, MAX_CONTEXT)
        cfg = llama_config(hf_model.config, n_ctx)
        state_dict = convert_llama_weights(hf_model, cfg)
        return hooked_with_weights_as_trained(cfg, state_dict, local_tokenizer)
    if model_type in ("gemma3", "gemma3_text"):
        # TL refuses GGUF-quantized checkpoints; the model in memory is already dequantized.
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        hf_model.hf_quantizer = None
        hf_model.is_quantized = False
        _offline_env()
        model = HookedModel.from_pretrained_no_processing(
            _gemma3_official_name(hf_model.config),
            hf_model=hf_model,
            tokenizer=local_tokenizer,
            device="cpu",
            dtype=torch.float32,
            default_prepend_bos=False,
        )
        return model.eval()
    if folder is not None:
        return hooked_from_folder(folder, hf_model, local_tokenizer, MAX_CONTEXT)
    raise UsageError(
        f"architecture '{model_type}' is not supported from a GGUF file (supported: "
        f"{', '.join(SUPPORTED_ARCHITECTURES)}); a Hugging Face folder of it may load"
    )
