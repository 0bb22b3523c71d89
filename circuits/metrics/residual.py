"""Residual-stream metrics: P0 vs rest norms, massive activations (Sun et al. 2024), direction
invariance of P0 across prompts, and per-position norms. Inputs are ``[batch, pos, d_model]``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.core.conventions import MASSIVE_ABS_THRESHOLD, MASSIVE_RATIO_THRESHOLD
from circuits.core.errors import NonFiniteError, UsageError


def check_finite(x: Tensor, where: str) -> None:
    """``NonFiniteError`` naming ``where`` (a hook) when ``x`` holds NaN or inf."""
    if not bool(torch.isfinite(x.detach()).all()):
        raise NonFiniteError(
            f"non-finite values (NaN/inf) at {where}: the model's weights or activations are "
            "broken there; check the checkpoint"
        )


def residual_norms(resid: Float[Tensor, "batch pos d_model"]) -> tuple[float, float]:
    """(P0 norm, median norm of positions >= 1) of one residual stream hook.

    P0 norm: the l2 norm at position 0, averaged over the batch. Rest: the median over every
    (row, position >= 1) pair of the l2 norm.
    """
    if resid.ndim != 3 or resid.shape[1] < 2:
        raise UsageError(
            f"expected a residual stream [batch, pos >= 2, d_model], got shape {tuple(resid.shape)}"
        )
    norms = resid.float().norm(dim=-1)
    return norms[:, 0].mean().item(), norms[:, 1:].median().item()


@dataclass(frozen=True)
class MassiveActivation:
    """One residual coordinate that Sun et al. (2024) would call a massive activation."""

    layer: int
    batch: int
    position: int
    dimension: int
    value: float
    ratio_to_median: float


def massive_activations(
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    abs_threshold: float = MASSIVE_ABS_THRESHOLD,
    ratio_threshold: float = MASSIVE_RATIO_THRESHOLD,
) -> list[MassiveActivation]:
    """Coordinates with |value| > abs_threshold and >= ratio_threshold x the median |value| of
    that hidden state (one hidden state = one (row, position) vector), after ``layer``."""
    magnitude = resid.float().abs()
    median = magnitude.median(dim=-1, keepdim=True).values.clamp_min(1e-12)
    hits = (magnitude > abs_threshold) & (magnitude >= ratio_threshold * median)
    found = []
    for b, p, d in hits.nonzero().tolist():
        found.append(
            MassiveActivation(
                layer=layer,
                batch=b,
                position=p,
                dimension=d,
                value=resid[b, p, d].item(),
                ratio_to_median=(magnitude[b, p, d] / median[b, p, 0]).item(),
            )
        )
    return found


def position_norms(x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, " pos"]:
    """l2 norm of each position's vector, averaged over the batch (e.g. layer-0 attention output)."""
    return x.float().norm(dim=-1).mean(dim=0)


def p0_direction_cosine(resid: Float[Tensor, "batch pos d_model"]) -> float | None:
    """Direction invariance: mean pairwise cosine between the rows' P0 residual vectors.

    None for a batch of one (there is no pair to compare).
    """
    if resid.shape[0] < 2:
        return None
    p0 = torch.nn.functional.normalize(resid[:, 0].float(), dim=-1)
    cos = p0 @ p0.T
    n = cos.shape[0]
    off_diagonal = cos.sum() - cos.diagonal().sum()
    return (off_diagonal / (n * (n - 1))).item()
