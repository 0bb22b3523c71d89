"""A model's shape without its weights: what ``p0-circuits plan`` reads before any load.

A ``ModelShape`` is the handful of config numbers that fix a model's memory and FLOPs: layers,
widths, heads, vocabulary, and for a mixture of experts the experts and how many each token
uses. ``shape_of(name)`` finds it without loading anything and without torch:

* the zoo's models and the published shapes of the models researchers study
  (``PUBLISHED_SHAPES``: each model's own ``config.json`` numbers, written here once so that
  planning works offline);
* a zoo entry built from a shape (``llama-3.2-1b-shape``, ``tiny``);
* a local Hugging Face folder: its ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from circuits.core.errors import UsageError
from circuits.zoo.tokenizers import ByteTokenizer


@dataclass(frozen=True)
class ModelShape:
    """What fixes a model's memory and FLOPs (``config.json`` names in the comments)."""

    name: str
    n_layers: int  # num_hidden_layers
    d_model: int  # hidden_size
    n_heads: int  # num_attention_heads
    n_kv_heads: int  # num_key_value_heads
    d_head: int  # head_dim (hidden_size / num_attention_heads when absent)
    d_mlp: int  # intermediate_size (per expert for a mixture of experts)
    d_vocab: int  # vocab_size
    tied_embeddings: bool = False  # tie_word_embeddings
    n_experts: int = 0  # num_experts / num_local_experts (0: a dense MLP)
    experts_per_token: int = 0  # num_experts_per_tok
    built_in_dtype: bool = False  # a zoo shape entry: built in the asked dtype, never converted

    @property
    def mlp_params(self) -> int:
        """One block's (gated) MLP parameters: every expert's, and the router's."""
        one = 3 * self.d_model * self.d_mlp
        if self.n_experts:
            return self.n_experts * one + self.d_model * self.n_experts
        return one

    @property
    def active_mlp_params(self) -> int:
        """One block's MLP parameters one token runs through (the experts it is routed to)."""
        if self.n_experts:
            return self.experts_per_token * 3 * self.d_model * self.d_mlp
        return self.mlp_params

    @property
    def attn_params(self) -> int:
        q_and_out = 2 * self.d_model * self.n_heads * self.d_head
        return q_and_out + 2 * self.d_model * self.n_kv_heads * self.d_head

    @property
    def embed_params(self) -> int:
        return self.d_vocab * self.d_model * (1 if self.tied_embeddings else 2)

    @property
    def n_params(self) -> int:
        return self.embed_params + self.n_layers * (self.attn_params + self.mlp_params)

    @property
    def resident_params(self) -> int:
        """The parameters a loaded ``HookedTransformer`` holds: tied embeddings are two matrices
        there (``W_E`` and ``W_U``)."""
        return self.n_params + (self.d_vocab * self.d_model if self.tied_embeddings else 0)

    @property
    def active_params(self) -> int:
        """Parameters one token runs through (all of them for a dense model)."""
        return self.embed_params + self.n_layers * (self.attn_params + self.active_mlp_params)


def _shape(name: str, **fields: Any) -> ModelShape:
    return ModelShape(name=name, **fields)


PUBLISHED_SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        _shape("smollm2-135m", n_layers=30, d_model=576, n_heads=9, n_kv_heads=3, d_head=64,
               d_mlp=1536, d_vocab=49152, tied_embeddings=True),
        _shape("gemma3-270m", n_layers=18, d_model=640, n_heads=4, n_kv_heads=1, d_head=256,
               d_mlp=2048, d_vocab=262144, tied_embeddings=True),
        _shape("llama-3.2-1b", n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8, d_head=64,
               d_mlp=8192, d_vocab=128256, tied_embeddings=True),
        _shape("llama-3.1-8b", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_head=128,
               d_mlp=14336, d_vocab=128256),
        _shape("olmoe-1b-7b", n_layers=16, d_model=2048, n_heads=16, n_kv_heads=16, d_head=128,
               d_mlp=1024, d_vocab=50304, n_experts=64, experts_per_token=8),
        _shape("qwen3-30b-a3b", n_layers=48, d_model=2048, n_heads=32, n_kv_heads=4, d_head=128,
               d_mlp=768, d_vocab=151936, n_experts=128, experts_per_token=8),
        _shape("llama-3.1-70b", n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, d_head=128,
               d_mlp=28672, d_vocab=128256),
    )
}  # fmt: skip
"""Each model's own ``config.json`` numbers (SmolLM2-135M-Instruct, Gemma 3 270M,
Llama-3.2-1B, Llama-3.1-8B, OLMoE-1B-7B-0924, Qwen3-30B-A3B, Llama-3.1-70B)."""


def shape_from_config(name: str, config: dict[str, Any]) -> ModelShape:
    """A ``ModelShape`` from a Hugging Face ``config.json`` (its text config for multimodal
    models); a missing number is a ``UsageError`` naming it."""
    cfg = config.get("text_config", config)

    def need(*keys: str) -> int:
        for key in keys:
            if cfg.get(key) is not None:
                return int(cfg[key])
        raise UsageError(f"{name}: config.json has no {keys[0]}; plan cannot size this model")

    d_model, n_heads = (
        need("hidden_size", "n_embd", "d_model"),
        need("num_attention_heads", "n_head"),
    )
    experts = int(
        cfg.get("num_experts") or cfg.get("num_local_experts") or cfg.get("n_routed_experts") or 0
    )
    d_mlp = (
        need("moe_intermediate_size", "intermediate_size")
        if experts
        else need("intermediate_size", "n_inner", "ffn_dim")
    )
    return ModelShape(
        name=name,
        n_layers=need("num_hidden_layers", "n_layer"),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
        d_head=int(cfg.get("head_dim") or d_model // n_heads),
        d_mlp=d_mlp,
        d_vocab=need("vocab_size"),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        n_experts=experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or 0),
    )  # fmt: skip


TINY_SHAPE: dict[str, Any] = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=128, d_vocab=ByteTokenizer.vocab_size
)  # fmt: skip
"""The tiny model's dimensions (``circuits.zoo.tiny`` builds it from these), torch-free."""


def shape_from_fields(name: str, fields: dict[str, Any]) -> ModelShape:
    """The shape of a model built from TransformerLens config ``fields`` over ``TINY_SHAPE``
    (a zoo shape entry, the tiny model, a benchmark's own model)."""
    f = {**TINY_SHAPE, **fields}
    return ModelShape(
        name=name,
        n_layers=int(f["n_layers"]),
        d_model=int(f["d_model"]),
        n_heads=int(f["n_heads"]),
        n_kv_heads=int(f.get("n_key_value_heads") or f["n_heads"]),
        d_head=int(f["d_head"]),
        d_mlp=int(f["d_mlp"]),
        d_vocab=int(f["d_vocab"]),
    )


def shape_of(name: str) -> ModelShape:
    """The shape of ``name``: a published shape, a zoo entry, or a local HF folder (module
    docstring); a ``UsageError`` listing what plan knows otherwise."""
    key = name.lower()
    if key in PUBLISHED_SHAPES:
        return PUBLISHED_SHAPES[key]
    from circuits.zoo.pins import ZOO

    if key in ZOO and ZOO[key].gguf is None:
        return replace(shape_from_fields(key, ZOO[key].shape or {}), built_in_dtype=True)
    path = Path(name)
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"{path / 'config.json'} is not readable JSON ({err})") from None
        return shape_from_config(path.name, config)
    known = ", ".join(sorted({*PUBLISHED_SHAPES, *ZOO}))
    raise UsageError(
        f"plan knows no shape for {name!r}: name one of {known}, or a local Hugging Face "
        "folder with a config.json"
    )
