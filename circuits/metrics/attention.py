"""Attention-sink metrics on a post-softmax pattern ``A[batch, head, query, key]``
(TransformerLens' ``hook_pattern``), exactly as ``docs/science.md`` defines them.

Batches must hold sequences of equal length with no padding: position 0 must be the real first
token of every row.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.core.arguments import Fraction, Index, checked
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
    # a pattern held in half precision sums to 1 within its rounding (bfloat16: ~1e-2); a
    # zeroed NaN pattern sums to 0 whatever the precision
    tol = max(1e-3, 8 * torch.finfo(pattern.dtype).eps) if pattern.is_floating_point() else 1e-3
    if sinks:
        ok = bool(((sums > 0) & (sums <= 1 + tol)).all()) and bool(torch.isfinite(pattern).all())
    else:
        ok = bool(((sums - 1).abs() <= tol).all())
    if not ok:
        raise NonFiniteError(
            f"the attention pattern at {where} is not a distribution (NaN/inf in the model's "
            "activations, zeroed by TransformerLens); check the model's weights and inputs"
        )


@checked
def attn_to_p0(pattern: Float[Tensor, "batch head query key"]) -> Float[Tensor, " head"]:
    """Attention that the other positions pay to P0: mean over queries q >= 1 of A[q, 0].

    Averaged over the batch; one value per head. The layer value is the mean over heads.
    """
    _check_pattern(pattern)
    return pattern[:, :, 1:, 0].float().mean(dim=(0, 2))  # float32 whatever the model's dtype


@checked
def sink_score(
    pattern: Float[Tensor, "batch head query key"], key_position: Index = 0
) -> Float[Tensor, " head"]:
    """Gu et al.'s alpha_k: mean over queries q >= k of A[q, k] (P0's own query included for k=0).

    Averaged over the batch; one value per head.
    """
    _check_pattern(pattern)
    if not 0 <= key_position < pattern.shape[-1]:
        raise UsageError(f"key_position {key_position} is outside the {pattern.shape[-1]} tokens")
    return pattern[:, :, key_position:, key_position].float().mean(dim=(0, 2))


@checked
def sink_rate(scores: Float[Tensor, "..."], eps: Fraction = DEFAULT_EPS) -> float:
    """Gu et al.'s Sink^eps: the share of heads whose sink score exceeds eps (0..1, not percent)."""
    if scores.numel() == 0:
        raise UsageError("sink_rate needs at least one head score")
    return (scores > eps).float().mean().item()


@checked
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


def attention_destinations(
    pattern: Float[Tensor, "batch head query key"], tokens: Int[Tensor, "batch key"]
) -> dict[str, float | int]:
    """Where queries q >= 2 send their attention (mean over those queries, heads and batch):
    ``p0`` = A[q, 0], ``self`` = A[q, q], ``prev`` = A[q, q - 1] (three disjoint keys for
    q >= 2), ``other`` the rest; and by key *token id*: ``top_token_id``, the id whose positions
    receive the most attention in total, with its share ``top_token_share`` -- the sink's
    substitute when P0 is not it (e.g. a frequent trigger token)."""
    _check_pattern(pattern)
    if pattern.shape[-1] < 3:
        raise UsageError("attention destinations need at least 3 tokens")
    if tokens.shape != (pattern.shape[0], pattern.shape[-1]):
        raise UsageError(
            f"tokens {tuple(tokens.shape)} do not match the pattern's batch and keys "
            f"{(pattern.shape[0], pattern.shape[-1])}"
        )
    a = pattern.detach().float().mean(dim=1)[:, 2:]  # [batch, query >= 2, key]
    q = torch.arange(2, pattern.shape[-1], device=a.device)
    rows = torch.arange(a.shape[1], device=a.device)
    p0 = a[:, :, 0].mean().item()
    self_ = a[:, rows, q].mean().item()
    prev = a[:, rows, q - 1].mean().item()
    per_key = a.sum(dim=1)  # [batch, key]: total attention each key position receives
    by_id = torch.zeros(pattern.shape[0], int(tokens.max()) + 1, device=a.device)
    by_id.scatter_add_(1, tokens.to(a.device), per_key)
    share = by_id.sum(dim=0) / (a.shape[0] * a.shape[1])
    top = int(share.argmax())
    return {
        "p0": p0,
        "self": self_,
        "prev": prev,
        "other": max(0.0, 1.0 - p0 - self_ - prev),
        "top_token_id": top,
        "top_token_share": share[top].item(),
    }
