"""The faithfulness curve (CPR / CMD) on a hand-built model whose curve is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuits.circuit import DiscoverConfig, discover

MARKER, SCORE = 6, 7
WRITES = {"mlp0@p0": 2.0, "mlp1@p0": 1.0, "mlp2@p0": 0.5}
"""What each MLP adds to P0's key score in the receiver layer (every other component: 0)."""
N_POS = 10


def build_additive_model() -> HookedTransformer:
    """4 layers, no norms. Position 0's positional embedding carries a marker; MLP i's one
    neuron reads only the marker (so it fires only at P0) and writes ``WRITES[mlp i]`` into
    dimension SCORE; attention in layers 0..2 writes nothing (W_O = 0); the embedding writes
    nothing into SCORE. Every head of layer 3 has a constant query and a key reading SCORE, so
    its pre-softmax score on P0 is s = the sum of the kept MLPs' writes and 0 on every other key:

        A[q, 0] = e^s / (e^s + q),   sink = mean over q of A[q, 0].
    """
    cfg = HookedTransformerConfig(
        n_layers=4,
        d_model=8,
        n_heads=2,
        d_head=2,
        d_mlp=2,
        n_ctx=16,
        d_vocab=6,
        act_fn="relu",
        normalization_type=None,
        positional_embedding_type="standard",
        use_attn_scale=False,
        default_prepend_bos=False,
        device="cpu",
        seed=0,
    )
    model = HookedTransformer(cfg, move_to_device=False)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, :6] = torch.eye(6)
        model.pos_embed.W_pos[0, MARKER] = 1.0
        for layer, write in enumerate(WRITES.values()):
            mlp = model.blocks[layer].mlp
            mlp.W_in[MARKER, 0] = 1.0
            mlp.W_out[0, SCORE] = write
        attn = model.blocks[3].attn
        attn.b_Q[:, 0] = 1.0
        attn.W_K[:, SCORE, 0] = 1.0
    return model.eval()


def closed_form_sink(score: float) -> float:
    return sum(math.exp(score) / (math.exp(score) + q) for q in range(N_POS)) / N_POS


def closed_form_f(order: list[str], k: int) -> float:
    """f(k) of a ranking: the sink with its first k components kept, normalised."""
    empty, full = closed_form_sink(0.0), closed_form_sink(sum(WRITES.values()))
    kept = sum(WRITES.get(name, 0.0) for name in order[:k])
    return (closed_form_sink(kept) - empty) / (full - empty)


def trapezoid(xs: list[float], ys: list[float]) -> float:
    return sum((xs[i] - xs[i - 1]) * (ys[i] + ys[i - 1]) / 2 for i in range(1, len(xs)))


@pytest.fixture(scope="module")
def found():
    tokens = torch.randint(0, 6, (3, N_POS), generator=torch.Generator().manual_seed(0))
    config = DiscoverConfig(
        counterfactual="zero", first_receiver=3, progress=False, curve_random_rankings=3
    )
    return discover(build_additive_model(), tokens, config, model_name="additive")


def test_curve_equals_its_closed_form_for_every_ranking(found):
    curve = found.record["faithfulness_curve"]
    n = curve["n_components"]
    assert n == 7  # embed + attn0..2 + mlp0..2
    sizes = curve["sizes"]
    assert sizes[:4] == [1, 2, 3, 4] and sizes[-1] == 7 and sizes == sorted(set(sizes))
    assert set(curve["rankings"]) == {"exact", "first_pass", "random_0", "random_1", "random_2"}
    # the exact ranking puts the three writers first, largest first
    assert curve["rankings"]["exact"]["order"][:3] == list(WRITES)
    for name, ranking in curve["rankings"].items():
        order = ranking["order"]
        assert sorted(order) == sorted(curve["rankings"]["exact"]["order"])
        expected = [closed_form_f(order, k) for k in curve["sizes"]]
        assert ranking["f"] == pytest.approx(expected, abs=1e-5), name
        xs = [0.0] + [k / n for k in curve["sizes"]]
        cpr = trapezoid(xs, [0.0, *expected])
        cmd = trapezoid(xs, [1.0] + [abs(1 - f) for f in expected])
        assert ranking["cpr"] == pytest.approx(cpr, abs=1e-5), name
        assert ranking["cmd"] == pytest.approx(cmd, abs=1e-5), name
    # the exact ranking is the best order of this additive model: no random order beats it
    best = curve["rankings"]["exact"]["cpr"]
    assert all(curve["rankings"][f"random_{i}"]["cpr"] <= best + 1e-9 for i in range(3))
    # a set shared by rankings is patched once: fewer runs than rankings x sizes
    assert curve["patched_runs"] < 5 * (len(curve["sizes"]) - 1)


def test_curve_ends_in_the_clean_and_empty_sinks(found):
    curve = found.record["faithfulness_curve"]
    assert curve["clean"] == pytest.approx(closed_form_sink(3.5), abs=1e-5)
    assert curve["empty"] == pytest.approx(closed_form_sink(0.0), abs=1e-5)
    assert all(r["f"][-1] == 1.0 for r in curve["rankings"].values())
    summary = curve["summary"]
    assert summary["random_mean"]["cpr"] == pytest.approx(
        sum(curve["rankings"][f"random_{i}"]["cpr"] for i in range(3)) / 3
    )
