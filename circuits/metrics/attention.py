"""Attention-sink metrics on a post-softmax pattern ``A[batch, head, query, key]``
(TransformerLens' ``hook_pattern``), exactly as ``docs/science.md`` defines them.

Batches must hold sequences of equal length with no padding: position 0 must be the real first
token of every row.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.core.conventions import DEFAULT_EPS
from circuits.core.errors import NonFiniteError, UsageError


def _check_pattern(pattern: Tensor) -> None:
    if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise UsageError(
            f"expected an attention pattern [batch, head, query, key], got shape {tuple(pattern.shape)}"
        )
    if pattern.shape[-1] < 2:
        raise UsageError("attention-sink metrics need at least 2 tokens (position 0 and one other)")


def check_pattern(
    pattern: Float[Tensor, "batch head query key"], where: str, *, sinks: bool = False
) -> None:
    """``NonFiniteError`` unless every query's attention sums to 1 (with learned attention sinks,
    ``use_attention_sinks``, to a share in (0, 1]: the sink takes the rest).

    TransformerLens replaces a NaN pattern by zeros, so a model with non-finite activations would
    otherwise read as "no attention to P0" -- a wrong number that looks valid.
    """
    sums = pattern.detach().float().sum(dim=-1)
    if sinks:
        ok = bool(((sums > 0) & (sums <= 1 + 1e-3)).all()) and bool(torch.isfinite(pattern).all())
    else:
        ok = bool(((sums - 1).abs() <= 1e-3).all())
    if not ok:
        raise NonFiniteError(
            f"the attention pattern at {where} is not a distribution (NaN/inf in the model's "
            "activations, zeroed by TransformerLens); check the model's weights and inputs"
        )


def attn_to_p0(pattern: Float[Tensor, "batch head query key"]) -> Float[Tensor, " head"]:
    """Attention that the other positions pay to P0: mean over queries q >= 1 of A[q, 0].

    Averaged over the batch; one value per head. The layer value is the mean over heads.
    """
    _check_pattern(pattern)
    return pattern[:, :, 1:, 0].mean(dim=(0, 2))


def sink_score(
    pattern: Float[Tensor, "batch head query key"], key_position: int = 0
) -> Float[Tensor, " head"]:
    """Gu et al.'s alpha_k: mean over queries q >= k of A[q, k] (P0's own query included for k=0).

    Averaged over the batch; one value per head.
    """
    _check_pattern(pattern)
    if not 0 <= key_position < pattern.shape[-1]:
        raise UsageError(f"key_position {key_position} is outside the {pattern.shape[-1]} tokens")
    return pattern[:, :, key_position:, key_position].mean(dim=(0, 2))


def sink_rate(scores: Float[Tensor, "..."], eps: float = DEFAULT_EPS) -> float:
    """Gu et al.'s Sink^eps: the share of heads whose sink score exceeds eps (0..1, not percent)."""
    if scores.numel() == 0:
        raise UsageError("sink_rate needs at least one head score")
    return (scores > eps).float().mean().item()


def sum_p_squared(pattern: Float[Tensor, "batch head query key"]) -> Float[Tensor, "head query"]:
    """The recognition signal sum_i p_i^2 of each query's attention distribution.

    Exactly 1 at query 0 (P0 can only attend to itself), at most 1 elsewhere and 1/(q+1) for a
    uniform query. Averaged over the batch.
    """
    _check_pattern(pattern)
    return pattern.float().pow(2).sum(dim=-1).mean(dim=0)


def key_attention(
    pattern: Float[Tensor, "batch head query key"], first_k: int
) -> Float[Tensor, " first_k"]:
    """Where the sink sits: the attention that queries q >= first_k pay to each key k < first_k
    (mean over those queries, heads and batch; every counted query sees all first_k keys, so the
    positions compete fairly)."""
    if pattern.shape[-1] <= first_k:
        raise UsageError(f"need more than first_k={first_k} tokens to locate the sink")
    return pattern[:, :, first_k:, :first_k].float().mean(dim=(0, 1, 2))
