"""Counterfactuals for "being at position zero": the values a patch writes into P0.

Activation patching asks "what if this component at position 0 had computed what it computes
when its token is *not* at position 0?". Three answers, chosen by name and recorded in every
output file:

``shift`` (default)
    Run the same prompts with one token prepended, ``[t, x_0, x_1, ..., x_{T-1}]``, so that the
    original first token ``x_0`` sits at position 1. The counterfactual value of an activation at
    position ``p`` of the original run is that run's activation at position ``p + 1``: the same
    token, one place later, with one more token before it. For P0 it is exactly "the first token
    when it is not first". The prepended token ``t`` is, by default, each prompt's own last token
    ``x_{T-1}`` (an ordinary in-distribution token that differs across prompts; it never repeats
    ``x_0``'s role); pass ``shift_token`` to choose a fixed one.
``mean``
    Mean ablation: the mean of the clean activation over every prompt and every position >= 1
    (never P0 itself), the same vector at every position.
``zero``
    Zero ablation: all zeros.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuits.core.conventions import check_counterfactual
from circuits.core.errors import UsageError


def shifted_tokens(
    tokens: Int[Tensor, "batch pos"], shift_token: int | None = None
) -> Int[Tensor, "batch pos_plus_1"]:
    """``tokens`` with one token prepended per row (default: the row's own last token)."""
    if shift_token is None:
        first = tokens[:, -1:]
    else:
        first = torch.full((tokens.shape[0], 1), int(shift_token), dtype=tokens.dtype)
    return torch.cat([first.to(tokens.device), tokens], dim=1)


def counterfactual_values(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    clean: dict[str, Tensor],
    name: str,
    hook_names: Iterable[str],
    *,
    shift_token: int | None = None,
) -> dict[str, Tensor]:
    """Counterfactual activation at each of ``hook_names``, aligned with the clean run's shape.

    ``clean`` holds the clean run's activations at those hooks (``[batch, pos, ...]``).
    """
    check_counterfactual(name)
    names = list(hook_names)
    if name == "zero":
        return {n: torch.zeros_like(clean[n]) for n in names}
    if name == "mean":
        out = {}
        for n in names:
            mean = clean[n][:, 1:].mean(dim=(0, 1), keepdim=True)
            out[n] = mean.expand_as(clean[n]).contiguous()
        return out
    if tokens.shape[1] + 1 > model.cfg.n_ctx:
        raise UsageError(
            f"the shift counterfactual needs {tokens.shape[1] + 1} positions but the model's "
            f"context is {model.cfg.n_ctx}; use fewer tokens"
        )
    if shift_token is not None and not 0 <= shift_token < model.cfg.d_vocab:
        raise UsageError(
            f"shift_token {shift_token} is outside the vocabulary (0..{model.cfg.d_vocab - 1})"
        )
    wanted = set(names)
    _, cache = model.run_with_cache(
        shifted_tokens(tokens, shift_token),
        return_type=None,
        names_filter=lambda n: n in wanted,
    )
    return {n: cache[n][:, 1:].contiguous() for n in names}
