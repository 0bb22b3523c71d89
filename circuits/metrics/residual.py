"""Residual-stream metrics: P0 vs rest norms, massive activations (Sun et al. 2024), direction
invariance of P0 across prompts, and per-position norms. Inputs are ``[batch, pos, d_model]``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.core.arguments import Index, Positive, checked
from circuits.core.conventions import MASSIVE_ABS_THRESHOLD, MASSIVE_RATIO_THRESHOLD
from circuits.core.errors import NonFiniteError, UsageError


def check_finite(x: Tensor, where: str) -> None:
    """``NonFiniteError`` naming ``where`` (a hook) when ``x`` holds NaN or inf."""
    if not bool(torch.isfinite(x.detach()).all()):
        raise NonFiniteError(
            f"non-finite values (NaN/inf) at {where}: the model's weights or activations are "
            "broken there; check the checkpoint"
        )


@checked
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


@checked
def massive_activations(
    resid: Float[Tensor, "batch pos d_model"],
    layer: Index,
    abs_threshold: Positive = MASSIVE_ABS_THRESHOLD,
    ratio_threshold: Positive = MASSIVE_RATIO_THRESHOLD,
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


@dataclass(frozen=True)
class NormGrowth:
    """Where P0's residual norm outgrows the other positions' (the paper's "P0 norm jump").

    With rho_l the P0/rest norm ratio after block l (rho_-1: the embedding) and
    g_l = max(0, log rho_l - log rho_{l-1}) block l's excess growth of P0's norm:

    * ``growth`` -- g_l per block;
    * ``first_two_blocks`` -- rho_1 / rho_-1, how many times P0 outgrows the rest within blocks
      0-1 (the paper's claim: the jump happens there);
    * ``share_l01`` -- (g_0 + g_1) / sum_l g_l, the share of all excess growth made in blocks
      0-1 (None when sum_l g_l < log 1.5: P0 never outgrows the rest by 1.5x);
    * ``largest_jump_layer`` -- argmax_l g_l, the block with the largest single jump (None in
      the same case).
    """

    growth: list[float]
    first_two_blocks: float | None
    share_l01: float | None
    largest_jump_layer: int | None


def norm_growth(ratios: list[float]) -> NormGrowth:
    """``NormGrowth`` from ``ratios``: ``ratios[0]`` the embedding's P0/rest norm ratio,
    ``ratios[l + 1]`` the one after block l."""
    logs = [math.log(max(r, 1e-12)) for r in ratios]
    growth = [max(0.0, b - a) for a, b in zip(logs[:-1], logs[1:], strict=False)]
    two = math.exp(logs[min(2, len(logs) - 1)] - logs[0]) if len(logs) > 1 else None
    total = sum(growth)
    if total < math.log(1.5):
        return NormGrowth(growth, two, None, None)
    jump = max(range(len(growth)), key=lambda i: growth[i])
    return NormGrowth(growth, two, sum(growth[:2]) / total, jump)


def processed_residual_note(model: Any) -> str | None:
    """Why this model's residual norms are not the raw model's, or None: TransformerLens'
    ``from_pretrained`` folds LayerNorm and, by default, *centres the writing weights*
    (``center_writing_weights``), which removes every write's mean over ``d_model``. A folded
    ``LNPre`` model whose embedding rows all have mean ~0 has been centred: its P0 norms and
    massive activations differ from the original model's (attention patterns do not)."""
    cfg = model.cfg
    if cfg.normalization_type != "LNPre":
        return None
    row_means = model.W_E.detach().float().mean(dim=-1).abs()
    if float(row_means.max()) > 1e-5:
        return None
    return (
        "this model was loaded with centred writing weights (TransformerLens' default "
        "center_writing_weights=True): residual norms and massive activations are of the "
        "centred residual stream, not the original model's; load it with "
        "HookedTransformer.from_pretrained_no_processing(...) for raw norms"
    )
