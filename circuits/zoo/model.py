"""``ZooModel``: a loaded model with its tokenizer and its BOS regime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.backend import HookedModel, is_model
from circuits.core.errors import UsageError
from circuits.zoo.tokenizers import ByteTokenizer


@dataclass
class ZooModel:
    """A loaded model: the HookedTransformer, its tokenizer and its BOS regime."""

    name: str
    model: HookedModel
    tokenizer: Any
    bos_token_id: int | None
    natural_bos: bool
    source: str
    load_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    description: str = ""  # the exact model, e.g. "SmolLM2-135M-Instruct (Q4_1 GGUF, ...)"

    def encode(self, text: str, *, bos: bool) -> Int[Tensor, "1 pos"]:
        """Token ids of ``text`` as a [1, pos] tensor; ``bos`` prepends the BOS token, nothing else."""
        self.require_tokenizer("encoding text")
        if isinstance(self.tokenizer, ByteTokenizer):
            ids = self.tokenizer.encode(text)
        else:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos:
            if self.bos_token_id is None:
                raise UsageError(f"{self.name} has no BOS token; use bos=False (--no-bos)")
            ids = [self.bos_token_id, *ids]
        return torch.tensor([ids], dtype=torch.long)

    def str_tokens(self, ids: Tensor | list[int]) -> list[str]:
        """Readable string of each token id (for figures and circuitsvis views)."""
        ids = ids.flatten().tolist() if isinstance(ids, Tensor) else list(ids)
        if self.tokenizer is None:
            return [f"<{i}>" for i in ids]
        if isinstance(self.tokenizer, ByteTokenizer):
            return [self.tokenizer.token_str(i) for i in ids]
        return [self.tokenizer.decode([i]) for i in ids]

    @property
    def n_ctx(self) -> int:
        return self.model.cfg.n_ctx

    @classmethod
    def from_hooked(
        cls, model: HookedModel, *, name: str | None = None, tokenizer: Any = None
    ) -> ZooModel:
        """A ``ZooModel`` for any HookedTransformer (your own, or TransformerLens'
        ``from_pretrained``): its tokenizer (``model.tokenizer`` unless given), BOS id and
        regime (``cfg.default_prepend_bos``), named ``name`` (default: ``cfg.model_name``)."""
        if not is_model(model):
            raise UsageError(f"from_hooked takes a HookedTransformer, got {type(model).__name__}")
        tok = model.tokenizer if tokenizer is None else tokenizer
        bos = getattr(tok, "bos_token_id", None) if tok is not None else None
        return cls(
            name=name or str(model.cfg.model_name),
            model=model,
            tokenizer=tok,
            bos_token_id=None if bos is None else int(bos),
            natural_bos=bool(model.cfg.default_prepend_bos) and bos is not None,
            source="a HookedTransformer given in Python",
            description=f"{model.cfg.model_name} ({model.cfg.n_layers} layers, given in Python)",
        )

    def require_tokenizer(self, what: str) -> None:
        if self.tokenizer is None:
            raise UsageError(
                f"{what} needs a tokenizer and {self.name} has none: pass token ids instead, "
                "or ZooModel.from_hooked(model, tokenizer=...)"
            )


def as_zoo_model(model: ZooModel | HookedModel) -> ZooModel:
    """``model`` as a ``ZooModel`` (a HookedTransformer is wrapped by ``from_hooked``)."""
    if isinstance(model, ZooModel):
        return model
    return ZooModel.from_hooked(model)
