"""Sink metrics against closed-form answers on a hand-built model and hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import SINK_TOKEN, build_sink_model, closed_form_pattern

from circuits.metrics import (
    attn_to_p0,
    massive_activations,
    measure_sinks,
    p0_direction_cosine,
    residual_norms,
    sink_rate,
    sink_score,
    sum_p_squared,
)

N = 12


def sink_tokens(batch: int = 2, n: int = N) -> torch.Tensor:
    """Sink token at position 0, then ordinary tokens (ids 0..6, 8..15, never the sink)."""
    ordinary = [i for i in range(16) if i != SINK_TOKEN]
    rows = [
        [SINK_TOKEN] + [ordinary[(b + j) % len(ordinary)] for j in range(n - 1)]
        for b in range(batch)
    ]
    return torch.tensor(rows)


def test_hand_built_model_has_closed_form_pattern(sink_model):
    _, cache = sink_model.run_with_cache(sink_tokens())
    expected = closed_form_pattern(2.0, N)
    for b in range(2):
        for h in range(2):
            torch.testing.assert_close(cache["pattern", 0][b, h], expected, atol=1e-6, rtol=0)


def test_attn_to_p0_and_sink_score_match_closed_form(sink_model):
    e = math.exp(2.0)
    expected_attn = sum(e / (e + q) for q in range(1, N)) / (N - 1)  # queries q >= 1
    expected_sink = sum(e / (e + q) for q in range(0, N)) / N  # queries q >= 0 (P0 included)
    _, cache = sink_model.run_with_cache(sink_tokens())
    pattern = cache["pattern", 0]
    assert attn_to_p0(pattern).tolist() == pytest.approx([expected_attn] * 2, abs=1e-6)
    assert sink_score(pattern).tolist() == pytest.approx([expected_sink] * 2, abs=1e-6)
    # Gu et al.'s alpha_k at k = 1: mean over q >= 1 of 1 / (e^s + q)
    expected_k1 = sum(1 / (e + q) for q in range(1, N)) / (N - 1)
    assert sink_score(pattern, key_position=1).tolist() == pytest.approx(
        [expected_k1] * 2, abs=1e-6
    )


def test_uniform_attention_without_sink():
    # score 0: plain causal averaging, A[q, k] = 1 / (q + 1)
    model = build_sink_model(score=0.0)
    _, cache = model.run_with_cache(sink_tokens())
    pattern = cache["pattern", 0]
    expected = sum(1 / (q + 1) for q in range(1, N)) / (N - 1)
    assert attn_to_p0(pattern)[0].item() == pytest.approx(expected, abs=1e-6)
    # recognition signal: sum_i p_i^2 = 1/(q+1), exactly 1 at P0
    expected_sq = [1 / (q + 1) for q in range(N)]
    assert sum_p_squared(pattern)[0].tolist() == pytest.approx(expected_sq, abs=1e-6)


def test_sink_rate_counts_heads_above_eps():
    scores = torch.tensor([0.1, 0.31, 0.3, 0.9])
    assert sink_rate(scores, eps=0.3) == pytest.approx(0.5)  # strictly greater than eps
    assert sink_rate(scores, eps=0.8) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        sink_rate(torch.tensor([]))


def test_residual_norms_and_cosine():
    resid = torch.zeros(2, 4, 3)
    resid[:, 0] = torch.tensor([3.0, 4.0, 0.0])  # norm 5 at P0, same direction in both rows
    resid[0, 1:] = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]])
    resid[1, 1:] = torch.tensor([[0, 0, 4.0], [5.0, 0, 0], [0, 6.0, 0]])
    p0, rest = residual_norms(resid)
    assert p0 == pytest.approx(5.0)
    assert rest == pytest.approx(3.0)  # torch.median of [1,2,3,4,5,6] is the lower middle, 3
    assert p0_direction_cosine(resid) == pytest.approx(1.0)
    resid[1, 0] = torch.tensor([-3.0, -4.0, 0.0])
    assert p0_direction_cosine(resid) == pytest.approx(-1.0)
    assert p0_direction_cosine(resid[:1]) is None


def test_massive_activations_follow_sun_et_al_thresholds():
    resid = torch.ones(1, 3, 2000)
    resid[0, 0, 5] = 2500.0  # > 100 and >= 1000 x median (1)
    resid[0, 1, 6] = 900.0  # below 1000 x median
    resid[0, 2, :] = 0.05
    resid[0, 2, 7] = 99.0  # ratio huge, but not > 100
    found = massive_activations(resid, layer=4)
    assert [(m.layer, m.batch, m.position, m.dimension) for m in found] == [(4, 0, 0, 5)]
    assert found[0].value == pytest.approx(2500.0)
    assert found[0].ratio_to_median == pytest.approx(2500.0)


def test_measure_sinks_on_hand_built_model():
    model = build_sink_model(score=2.0, massive=5000.0)
    tokens = sink_tokens()
    report = measure_sinks(model, tokens, bos=False)
    e = math.exp(2.0)
    layer = report.layers[0]
    assert layer.attn_to_p0 == pytest.approx(
        sum(e / (e + q) for q in range(1, N)) / (N - 1), abs=1e-6
    )
    assert layer.sink_rate == 1.0  # both heads have sink score > 0.3
    # W_O = 0: resid_post = one-hot embeddings; P0 has the planted coordinate
    assert layer.p0_norm == pytest.approx(math.hypot(1.0, 5000.0), rel=1e-6)
    assert layer.rest_norm_median == pytest.approx(1.0)
    assert [(m.position, m.dimension) for m in report.massive_activations] == [(0, 3), (0, 3)]
    assert report.layer0_sum_p_squared[0] == pytest.approx(1.0)
    assert report.layer0_sum_p_squared[5] == pytest.approx((e**2 + 5) / (e + 5) ** 2, abs=1e-6)
    assert report.layer0_attn_out_norm == pytest.approx([0.0] * N)
    data = report.to_dict()
    assert data["layers"][0]["heads"][1]["sink_score"] == pytest.approx(layer.sink_score)
    assert data["first_layer_norm_ratio_over_10"] == 0
    # the planted coordinate is in the embedding already: no block makes P0 outgrow the rest
    assert data["p0_norm_growth_first_two_blocks"] == pytest.approx(1.0, rel=1e-6)
    assert data["largest_norm_jump_layer"] is None and data["norm_growth_share_l01"] is None


def test_norm_growth_names_where_p0_outgrows_the_rest():
    """Ratios: embedding 1, then after blocks 0..3: 1, 20, 20, 40 (hand-computed growth)."""
    from circuits.metrics.residual import norm_growth

    g = norm_growth([1.0, 1.0, 20.0, 20.0, 40.0])
    assert g.growth == pytest.approx([0.0, math.log(20), 0.0, math.log(2)])
    assert g.first_two_blocks == pytest.approx(20.0)
    assert g.share_l01 == pytest.approx(math.log(20) / math.log(40))
    assert g.largest_jump_layer == 1
    # a late jump (like SmolLM2's second massive activation at block 11) is the largest one,
    # while blocks 0-1 still carry their own growth
    late = norm_growth([0.7, 1.2, 3.3, 8.9, 1.0, 169.0])
    assert late.largest_jump_layer == 4 and late.first_two_blocks == pytest.approx(3.3 / 0.7)
    never = norm_growth([1.0, 1.1, 1.0, 1.2])  # never 1.5x: no jump, no share
    assert never.share_l01 is None and never.largest_jump_layer is None


def test_measure_sinks_rejects_bad_tokens(sink_model):
    with pytest.raises(ValueError, match="at least 2 positions"):
        measure_sinks(sink_model, torch.tensor([[SINK_TOKEN]]), bos=False)
    with pytest.raises(ValueError, match="context"):
        measure_sinks(sink_model, torch.zeros(1, 40, dtype=torch.long), bos=False)
