"""Conditions that separate first-ness from position: a document mask and repositioned tokens.

The paper's account says P0 is recognised because, under the causal mask, it can attend only to
itself. A competing account ("A Mechanistic Account of Attention Sinks in GPT-2") says it is
recognised by its *position*. These conditions pull the two apart; each adds hooks to every
forward while it is applied, so everything run inside ``applied(model, ...)`` (a ``Patcher``
built there, its clean runs and patches, ``discover``) sees the model under the condition:

``DocumentMask(start)``
    A block-diagonal causal mask, as in packed training: queries at ``start`` and later see only
    keys at ``start`` and later, so the token at ``start`` is the first of its segment and
    attends only to itself, while its position stays ``start`` (positions continue). Does it
    become its segment's sink (``SinkScoreAt(start)``), through the same components?
``Reposition({p: p', ...})``
    The token at ``p`` is given position ``p'`` and keeps its place under the causal mask:
    rotary models rotate its query and key as at ``p'`` (TransformerLens' own rotation tables,
    per layer); learned positions give it row ``p'`` of the position embedding. ``{0: k}`` is
    the first token without position 0; ``{j: 0}`` a later token with it. Does the sink follow
    the causal mask or the position?

A ``Patcher(..., conditions=[...])`` (and the panel's ``explore(..., conditions=[...])``) holds
its conditions on every forward it runs, clean, counterfactual and patched, and on no other.

``SinkScoreAt(key)`` is Gu et al.'s ``alpha_key`` (mean over queries ``q >= key`` of ``A[q,
key]``) at the receivers: the sink score of a segment's first token.

TransformerLens 3 models only (a bridge names its rotary hooks differently).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from circuits.backend import HookedModel, get_act_name, require_hooked_transformer
from circuits.core.arguments import Index, NonEmpty, checked
from circuits.core.errors import UsageError
from circuits.core.model_lock import exclusive
from circuits.metrics.attention import check_pattern, sink_score
from circuits.patching.readouts import SinkScore

Hook = tuple[str, Callable]


class Condition:
    """Hooks that hold on every forward while applied (``applied``)."""

    def hooks(self, model: HookedModel, n_tokens: int) -> list[Hook]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class DocumentMask(Condition):
    """Queries at ``start`` and later see only keys at ``start`` and later (module docstring)."""

    @checked
    def __init__(self, start: Index) -> None:
        if start < 1:
            raise UsageError("DocumentMask(start): start must be >= 1 (0 is the causal mask)")
        self.start = int(start)

    def hooks(self, model: HookedModel, n_tokens: int) -> list[Hook]:
        if self.start >= n_tokens:
            raise UsageError(
                f"DocumentMask({self.start}) needs more than {self.start} tokens, got {n_tokens}"
            )
        s = self.start

        def mask(scores: Tensor, hook) -> Tensor:
            scores[..., s:, :s] = float("-inf")
            return scores

        return [(get_act_name("attn_scores", la), mask) for la in range(model.cfg.n_layers)]

    def describe(self) -> dict[str, Any]:
        return {
            "name": f"document_mask:{self.start}",
            "definition": f"block-diagonal causal mask: queries at positions >= {self.start} "
            f"see only keys at positions >= {self.start}; positions continue (packed training)",
            "start": self.start,
        }


class Reposition(Condition):
    """Each token at ``p`` is given position ``positions[p]`` (module docstring)."""

    @checked
    def __init__(self, positions: Mapping[Index, Index]) -> None:
        self.positions = {int(p): int(q) for p, q in positions.items()}
        if not self.positions or all(p == q for p, q in self.positions.items()):
            raise UsageError("Reposition needs at least one token moved, e.g. {0: 16}")

    def hooks(self, model: HookedModel, n_tokens: int) -> list[Hook]:
        far = max(max(self.positions), max(self.positions.values()))
        if max(self.positions) >= n_tokens or far >= model.cfg.n_ctx:
            raise UsageError(
                f"Reposition {self.positions}: token positions must be < {n_tokens} and new "
                f"positions < the model's context {model.cfg.n_ctx}"
            )
        kind = model.cfg.positional_embedding_type
        if kind == "rotary":
            return [h for la in range(model.cfg.n_layers) for h in self._rotary(model, la)]
        if kind in ("standard", "shortformer"):
            return [("hook_pos_embed", self._learned(model))]
        raise UsageError(f"Reposition: {kind!r} positions are not supported (rotary or learned)")

    def _rotary(self, model: HookedModel, layer: int) -> list[Hook]:
        attn = model.blocks[layer].attn
        raw: dict[str, Tensor] = {}

        def keep(act: Tensor, hook, key: str) -> None:
            raw[key] = act

        def rotate(act: Tensor, hook, key: str) -> Tensor:
            for p, q in self.positions.items():
                x = raw[key][:, p : p + 1]
                act[:, p : p + 1] = attn.apply_rotary(x, past_kv_pos_offset=q).to(act.dtype)
            return act

        out: list[Hook] = []
        for key in ("q", "k"):
            out.append((get_act_name(key, layer), lambda a, hook, key=key: keep(a, hook, key)))
            out.append(
                (get_act_name(f"rot_{key}", layer), lambda a, hook, key=key: rotate(a, hook, key))
            )
        return out

    def _learned(self, model: HookedModel) -> Callable:
        table = model.pos_embed.W_pos

        def move(act: Tensor, hook) -> Tensor:
            for p, q in self.positions.items():
                act[:, p] = table[q].to(act.dtype)
            return act

        return move

    def describe(self) -> dict[str, Any]:
        moved = ", ".join(f"{p}->{q}" for p, q in sorted(self.positions.items()))
        return {
            "name": f"reposition:{moved}",
            "definition": "the token at each position p is given position p' (rotary: its query "
            "and key rotated as at p'; learned: row p' of the position embedding) and keeps its "
            "place under the causal mask",
            "positions": {str(p): q for p, q in self.positions.items()},
        }


@contextmanager
def applied(model: HookedModel, *conditions: Condition, n_tokens: int) -> Iterator[HookedModel]:
    """``model`` with ``conditions`` on every forward inside the block (``n_tokens``: the prompt
    length they are checked against)."""
    require_hooked_transformer("document masks and repositioned tokens")
    hooks = [h for c in conditions for h in c.hooks(model, n_tokens)]
    with exclusive(model), model.hooks(fwd_hooks=hooks):  # no other thread's forward sees them
        yield model


class HeldConditions:
    """``with held():`` holds ``model`` (``exclusive``) with ``conditions`` on every forward
    inside; re-entered from inside, it adds nothing (an engine's nested calls)."""

    def __init__(self, model: HookedModel, conditions: tuple[Condition, ...], n_tokens: int):
        self.model, self.conditions, self.n_tokens = model, conditions, n_tokens
        self._active = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self._active:
            yield
            return
        hold = applied(self.model, *self.conditions, n_tokens=self.n_tokens)
        with hold if self.conditions else exclusive(self.model):
            self._active = True
            try:
                yield
            finally:
                self._active = False


class SinkScoreAt(SinkScore):
    """Gu et al.'s ``alpha_key`` at the receivers: mean over queries ``q >= key`` of ``A[q,
    key]``, averaged over prompts, heads and receiver layers (``key=0``: the sink score)."""

    name = "sink_score_at_key"

    @checked
    def __init__(self, key: Index, receivers: NonEmpty[Index] | None = None) -> None:
        super().__init__(receivers)
        self.key = int(key)

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        super().check(model, tokens)
        if self.key >= tokens.shape[1]:
            raise UsageError(f"SinkScoreAt({self.key}): the prompts have {tokens.shape[1]} tokens")

    def reduce(self, name: str, acts: Tensor) -> Tensor:
        check_pattern(acts.reshape(-1, *acts.shape[2:]), name, sinks=self._sinks)
        return torch.stack([sink_score(c, self.key) for c in acts])

    def describe(self) -> dict[str, Any]:
        return self._described(
            f"Gu et al. alpha_{self.key}: mean over queries q>={self.key} of A[q,{self.key}], "
            "averaged over prompts, heads and receiver layers"
        )
