"""Readouts on the model's output: does a patch change what the model predicts?

The anchor argument for the sink (docs/science.md) is that the model *needs* it: these readouts
ask it of the output. Each reads the final normalised residual (``ln_final.hook_normalized``, or
the last block's ``resid_post`` for a model without a final norm) and unembeds only the rows and
columns it reads: the forward never computes the full logits of the stacked batch.

* ``NextTokenLoss``: mean cross-entropy of the next-token predictions at positions ``0..T-2``
  (targets ``tokens[:, 1:]``), averaged over prompts and positions, in nats;
* ``LogitDifference(correct, wrong, position=-1)``: logit of ``correct`` minus logit of ``wrong``
  at one position (per prompt ids allowed: IOI's indirect object vs subject), batch-averaged;
* ``KLToClean(positions=None)``: KL(clean || patched) of the next-token distribution, in nats,
  averaged over the positions read (default: every position) and prompts.

Logits follow TransformerLens' ``HookedTransformer.forward``: ``unembed`` then the output
softcap (``output_logits_soft_cap``) where the model has one.

The full-vocabulary readouts (loss, KL) unembed a piece of the prompts at a time
(``circuits.patching.plan.logit_chunks``: at most ``LOGIT_CHUNK_VALUES`` float32 logits, 512 MB,
per piece, at least one prompt) and sum what each piece contributes before dividing once: a
patch's logits, log-probabilities and KL terms are copies of a piece, and only the clean
log-probabilities that KL compares with are held whole (a 262k-token vocabulary over 64 prompts
x 256 tokens is 17 GB a copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from circuits.backend import HookedModel, get_act_name
from circuits.core.arguments import Index, NonEmpty, checked
from circuits.core.errors import UsageError
from circuits.patching.plan import logit_chunks
from circuits.patching.readouts import ComparedToClean, Readout


def final_residual_hook(model: HookedModel) -> str:
    """The hook holding the residual the unembedding reads."""
    if "ln_final.hook_normalized" in model.hook_dict:
        return "ln_final.hook_normalized"
    return get_act_name("resid_post", model.cfg.n_layers - 1)


def logits_of(model: HookedModel, resid: Tensor, columns: Tensor | None = None) -> Tensor:
    """Logits from the final normalised residual ``[..., d_model]`` as read at
    ``final_residual_hook`` (only ``columns`` of the vocabulary when given), as the model's
    forward computes them: ``ln_final``'s weight and bias (applied after ``hook_normalized``;
    none on a folded ``LNPre`` / ``RMSPre`` norm), the unembedding, the output softcap."""
    norm = getattr(model, "ln_final", None)
    if norm is not None and "ln_final.hook_normalized" in model.hook_dict:
        resid = resid.to(model.cfg.dtype)
        if getattr(norm, "w", None) is not None:
            resid = resid * norm.w
        if getattr(norm, "b", None) is not None:
            resid = resid + norm.b
    w, b = model.W_U, model.b_U
    if columns is not None:
        w, b = w[:, columns], b[columns]
    logits = resid.to(w.dtype) @ w + b
    cap = model.cfg.output_logits_soft_cap
    if cap and cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits


class _OutputReadout(Readout):
    _model: HookedModel | None = None
    _tokens: Tensor | None = None

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        self._model, self._tokens = model, tokens

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        return (final_residual_hook(model),)

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, None]:
        assert self._model is not None
        return reduced[final_residual_hook(self._model)].float(), None

    @property
    def model(self) -> HookedModel:
        if self._model is None:
            raise RuntimeError("readout used before check (internal error)")
        return self._model


def _log_probs(model: HookedModel, resid: Tensor) -> Tensor:
    return logits_of(model, resid).float().log_softmax(dim=-1)


def _next_token_nll_sum(logp: Tensor, tokens: Tensor) -> Tensor:
    """Summed cross-entropy of ``logp`` ``[batch, T-1, vocab]`` (positions 0..T-2) against the
    next prompt tokens."""
    return -logp.gather(-1, tokens[:, 1:, None]).sum()


def _kl_sum(ref: Tensor, logp: Tensor) -> Tensor:
    """KL(ref || patched) of log-probabilities, summed over the vocabulary and the rows."""
    return F.kl_div(logp, ref, log_target=True, reduction="sum")


class NextTokenLoss(_OutputReadout):
    """Mean next-token cross-entropy (nats) over positions 0..T-2 and prompts."""

    name = "next_token_loss"
    label = "next-token loss"
    axis = "next-token loss (nats)"

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        if tokens.shape[1] < 2:
            raise UsageError("the next-token loss needs prompts of at least 2 tokens")
        super().check(model, tokens)

    def reduce(self, name: str, acts: Tensor) -> Tensor:  # type: ignore[override]
        tokens = self._tokens
        assert tokens is not None
        chunks = logit_chunks(acts.shape[1], acts.shape[2], self.model.cfg.d_vocab)
        out = []
        for resid in acts:  # one patch, a few prompts at a time
            total = sum(
                _next_token_nll_sum(_log_probs(self.model, resid[c, :-1]), tokens[c])
                for c in chunks
            )
            out.append(torch.as_tensor(total) / (tokens.shape[0] * (tokens.shape[1] - 1)))
        return torch.stack(out)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": "mean cross-entropy (nats) of the next-token prediction at positions "
            "0..T-2 (targets: the next prompt token), over prompts and positions",
        }


def _per_row(ids: int | Sequence[int] | Tensor, batch: int, what: str) -> Tensor:
    t = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise UsageError(f"{what}: give one token id or one per prompt ({batch}), got {t.numel()}")
    return t


TokenIds = Index | NonEmpty[Index] | Int[Tensor, "..."]
"""One token id, or one per prompt (a sequence or an integer tensor)."""


class LogitDifference(_OutputReadout):
    """logit(correct) - logit(wrong) at ``position`` (default: the last), batch-averaged."""

    name = "logit_difference"
    label = "logit difference"
    axis = "logit(correct) − logit(wrong)"

    @checked
    def __init__(
        self,
        correct: TokenIds,
        wrong: TokenIds,
        position: int = -1,
    ) -> None:
        self.correct, self.wrong, self.position = correct, wrong, int(position)

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        super().check(model, tokens)
        b, t = tokens.shape
        if not -t <= self.position < t:
            raise UsageError(f"logit difference position {self.position} outside 0..{t - 1}")
        self._c = _per_row(self.correct, b, "correct tokens").to(model.cfg.device)
        self._w = _per_row(self.wrong, b, "wrong tokens").to(model.cfg.device)
        both = torch.cat([self._c, self._w])
        if int(both.min()) < 0 or int(both.max()) >= model.cfg.d_vocab:
            raise UsageError(f"logit difference token ids outside 0..{model.cfg.d_vocab - 1}")
        self._cols = both.unique()  # the only vocabulary columns unembedded
        self._ci = torch.searchsorted(self._cols, self._c)
        self._wi = torch.searchsorted(self._cols, self._w)

    def reduce(self, name: str, acts: Tensor) -> Tensor:
        rows = torch.arange(acts.shape[1], device=acts.device)
        resid = acts[:, :, self.position]  # [n, batch, d_model]: one row per prompt
        out = []
        for r in resid:
            logits = logits_of(self.model, r, self._cols)
            out.append((logits[rows, self._ci] - logits[rows, self._wi]).float().mean())
        return torch.stack(out)

    def describe(self) -> dict[str, Any]:
        as_l = lambda x: torch.as_tensor(x).reshape(-1).tolist()  # noqa: E731
        return {
            "name": self.name,
            "definition": "logit of the correct token minus logit of the wrong token at one "
            "position, averaged over prompts",
            "correct": as_l(self.correct),
            "wrong": as_l(self.wrong),
            "position": self.position,
        }


class KLToClean(_OutputReadout, ComparedToClean):
    """KL(clean || patched) of the next-token distribution (nats), mean over positions and
    prompts; ``positions=None``: every position."""

    name = "kl_to_clean"
    label = "KL to clean"
    axis = "KL(clean ‖ patched) of the next token (nats)"

    @checked
    def __init__(self, positions: NonEmpty[int] | None = None) -> None:
        self.positions = None if positions is None else tuple(int(p) for p in positions)

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        super().check(model, tokens)
        t = tokens.shape[1]
        if self.positions is not None and any(not -t <= p < t for p in self.positions):
            raise UsageError(f"KL positions {self.positions} outside 0..{t - 1}")

    def _rows(self, resid: Tensor) -> Tensor:
        return resid if self.positions is None else resid[:, list(self.positions)]

    def reduce(self, name: str, acts: Tensor, clean: Tensor | None = None) -> Tensor:
        assert clean is not None
        clean = self._rows(clean)
        chunks = logit_chunks(clean.shape[0], clean.shape[1], self.model.cfg.d_vocab)
        refs = [_log_probs(self.model, clean[c]) for c in chunks]
        out = []
        for resid in acts:
            resid = self._rows(resid)
            total = sum(
                _kl_sum(ref, _log_probs(self.model, resid[c]))
                for c, ref in zip(chunks, refs, strict=True)
            )
            out.append(torch.as_tensor(total) / (clean.shape[0] * clean.shape[1]))
        return torch.stack(out)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": "KL(clean || patched) of the next-token distribution in nats, averaged "
            "over prompts and positions",
            "positions": None if self.positions is None else list(self.positions),
        }


class LossAndKL(NextTokenLoss, ComparedToClean):
    """``NextTokenLoss`` as the value and ``(loss, KL(clean || patched))`` as the detail, from one
    unembedding per patch: the two questions of ``circuits.circuit.prediction`` in one run."""

    name = "next_token_loss_and_kl"

    def reduce(self, name: str, acts: Tensor, clean: Tensor | None = None) -> Tensor:
        tokens = self._tokens
        assert clean is not None and tokens is not None
        b, t = tokens.shape
        chunks = logit_chunks(b, t, self.model.cfg.d_vocab)
        refs = [_log_probs(self.model, clean[c]) for c in chunks]
        out = []
        for resid in acts:
            nll = kl = torch.zeros((), device=clean.device)
            for c, ref in zip(chunks, refs, strict=True):
                logp = _log_probs(self.model, resid[c])
                nll = nll + _next_token_nll_sum(logp[:, :-1], tokens[c])
                kl = kl + _kl_sum(ref, logp)
            out.append(torch.stack([nll / (b * (t - 1)), kl / (b * t)]))
        return torch.stack(out)  # [n, 2]

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        both = reduced[final_residual_hook(self.model)].float()
        return both[:, 0], both

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": "value: mean next-token cross-entropy (nats) at positions 0..T-2; "
            "detail: (that loss, KL(clean || patched) of the next-token distribution in nats at "
            "every position), averaged over prompts and positions",
        }
