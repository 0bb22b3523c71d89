"""Emergence traces: metrics against an independent computation, the phase detector, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from _training_helpers import tiny_config
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuits.emergence.checkpoint_metrics import ablation_effects, measure_checkpoint
from circuits.emergence.phases import PhaseCriteria, detect_phases
from circuits.training.loop import train


@pytest.fixture(scope="module")
def tiny() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=4,
        d_model=16,
        n_ctx=12,
        d_head=4,
        n_heads=4,
        d_mlp=32,
        d_vocab=20,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_dim=4,
        seed=1,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    with torch.no_grad():  # make the patterns far from uniform so the metrics are not trivial
        for block in model.blocks:
            block.attn.W_Q.mul_(6)
            block.attn.W_K.mul_(6)
    return model


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, 20, (5, 12), generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------
# Metrics against run_with_cache
# --------------------------------------------------------------------------------------------


def test_checkpoint_metrics_match_an_independent_computation(tiny, tokens):
    got = measure_checkpoint(tiny, tokens, bos=False, first_k=3)
    _, cache = tiny.run_with_cache(tokens)
    n_layers = tiny.cfg.n_layers
    for layer in range(n_layers):
        a = cache["pattern", layer]  # [batch, head, q, k]
        row = got["layers"][layer]
        # attention to P0 from queries >= 1, by explicit loops over heads
        expected = sum(a[:, h, 1:, 0].mean().item() for h in range(4)) / 4
        assert row["attn_to_p0"] == pytest.approx(expected, abs=1e-6)
        assert row["sink_score"] == pytest.approx(a[:, :, :, 0].mean().item(), abs=1e-6)
        keys = [a[:, :, 3:, k].mean().item() for k in range(3)]
        assert row["key_attention"] == pytest.approx(keys, abs=1e-6)
        resid = cache["resid_post", layer]
        norms = resid.norm(dim=-1)
        ratio = norms[:, 0].mean().item() / norms[:, 1:].flatten().median().item()
        assert row["p0_norm_ratio"] == pytest.approx(ratio, rel=1e-5)
    down = [
        torch.stack([cache["pattern", layer][:, :, 3:, k].mean() for k in range(3)])
        for layer in (2, 3)
    ]
    overall = torch.stack(down).mean(0)
    assert got["sink_position"] == int(overall.argmax())
    assert got["sink_strength"] == pytest.approx(
        max(cache["pattern", layer][:, :, :, 0].mean().item() for layer in (2, 3)), abs=1e-6
    )
    logits = tiny(tokens)
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 20), tokens[:, 1:].reshape(-1)
    )
    assert got["eval_loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_ablation_effects_match_a_manual_patch(tiny, tokens):
    clean, effects = ablation_effects(tiny, tokens)
    # independent: rebuild the residual stream by hand, ablating layer 0's MLP output at P0
    _, cache = tiny.run_with_cache(tokens)
    d_clean = sum(cache["pattern", layer][:, :, 1:, 0].mean().item() for layer in (2, 3)) / 2
    assert clean == pytest.approx(d_clean, abs=1e-6)

    def patch(act, hook):  # the mean over every prompt and position >= 1 (mean ablation)
        out = act.clone()
        out[:, 0] = act[:, 1:].mean(dim=(0, 1))
        return out

    patterns = {}
    tiny.run_with_hooks(
        tokens,
        fwd_hooks=[("blocks.0.hook_mlp_out", patch)]
        + [
            (
                f"blocks.{layer}.attn.hook_pattern",
                lambda p, hook: patterns.__setitem__(hook.layer(), p),
            )
            for layer in (2, 3)
        ],
    )
    d_abl = sum(patterns[layer][:, :, 1:, 0].mean().item() for layer in (2, 3)) / 2
    assert effects[0]["mlp_out"] == pytest.approx(d_clean - d_abl, abs=1e-6)
    assert effects[0]["mlp_out"] != 0.0  # the hook did something
    assert effects[3] == {"attn_out": 0.0, "mlp_out": 0.0}  # nothing downstream of the last block


# --------------------------------------------------------------------------------------------
# Phase detector on synthetic traces with known answers
# --------------------------------------------------------------------------------------------


def test_phases_textbook_run():
    s = [0.05, 0.1, 0.4, 0.35, 0.5, 0.6, 0.8, 0.85, 0.86]
    loc = [(0, None), (1, 0), (2, 3), (0, 2), (0, 1), (0, 1), (0, 1), (0, 1), (0, 1)]
    assert detect_phases(s, loc) == [
        "absent",
        "absent",
        "wandering",
        "wandering",
        "transition",
        "transition",
        "stable",
        "stable",
        "stable",
    ]


def test_phases_no_sink_and_vanishing_sink():
    assert detect_phases([0.1, 0.2, 0.25], [(0, None)] * 3) == ["absent"] * 3
    assert detect_phases([0.1, 0.5, 0.2], [(0, 1)] * 3) == ["absent", "wandering", "absent"]


def test_phases_min_stable_and_delta():
    # the final value is reached only at the last checkpoint: no stable phase (min_stable = 2)
    assert detect_phases([0.4, 0.6, 0.9], [(0, 1)] * 3) == ["transition"] * 3
    assert detect_phases([0.4, 0.6, 0.9], [(0, 1)] * 3, PhaseCriteria(min_stable=1)) == [
        "transition",
        "transition",
        "stable",
    ]
    # a wide delta makes everything at the final location stable
    assert detect_phases([0.4, 0.6, 0.9], [(0, 1)] * 3, PhaseCriteria(delta=0.6)) == ["stable"] * 3
    # a location change inside the strong period sends earlier checkpoints back to wandering
    assert detect_phases([0.9, 0.9, 0.9, 0.9], [(1, 1), (0, 1), (0, 1), (0, 1)]) == [
        "wandering",
        "stable",
        "stable",
        "stable",
    ]
    assert detect_phases([], []) == []


def test_phases_are_monotone_on_random_inputs():
    gen = torch.Generator().manual_seed(0)
    order = {"absent": 0, "wandering": 1, "transition": 2, "stable": 3}
    for _ in range(200):
        n = int(torch.randint(1, 12, (1,), generator=gen))
        s = torch.rand(n, generator=gen).tolist()
        loc = torch.randint(0, 2, (n,), generator=gen).tolist()
        labels = detect_phases(s, loc)
        if s[-1] > 0.3:
            ranks = [order[x] for x in labels]
            assert ranks == sorted(ranks)


# --------------------------------------------------------------------------------------------
# A whole run, through the CLI
# --------------------------------------------------------------------------------------------


def test_trace_cli_on_a_tiny_run(tmp_path):
    from circuits.cli import main

    cfg = tiny_config(n_layers=3, steps=8, n_checkpoints=3, save_every=0, bos=True)
    train(cfg, tmp_path / "run", progress=False)
    assert main(["trace", str(tmp_path / "run"), "--batch-size", "4", "--quiet"]) == 0
    trace = json.loads((tmp_path / "run" / "trace.json").read_text())
    assert trace["bos"] is True
    assert [c["step"] for c in trace["checkpoints"]] == [0, 1, 3, 8]
    for c in trace["checkpoints"]:
        assert c["phase"] in ("absent", "wandering", "transition", "stable")
        assert [row["layer"] for row in c["layers"]] == [0, 1, 2]
        for row in c["layers"]:
            assert {"layer", "attn_to_p0", "sink_score", "p0_norm_ratio"} <= set(row)
    assert (tmp_path / "run" / "trace.png").stat().st_size > 10_000
    assert trace["versions"]["torch"] == torch.__version__
    assert main(["trace", str(tmp_path / "nope")]) == 2
