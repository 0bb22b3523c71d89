"""Experts as sites and the router as a readout, against the MoE block recomputed by hand.

The model is TransformerLens 3's own MoE (a tiny Mixtral-shaped HookedTransformer: 4 experts,
top-2). The independent side never uses the toolkit's exposed hooks: it runs an untouched copy
of the model with plain hooks and recomputes the router (``W_gate``, softmax, top-k) and each
expert's output from the block's input (``ln2.hook_normalized``), as the MoE block defines them.
"""

from __future__ import annotations

import copy

import pytest
import torch

from circuits.backend import ON_BRIDGE

pytestmark = pytest.mark.skipif(
    ON_BRIDGE,
    reason="TransformerLens 4's native model builds no MoE and its bridges run the experts fused "
    "(expert sites are refused by name there: circuits.backend.experts.experts_unavailable)",
)

N_EXPERTS, TOP_K, RECEIVERS = 4, 2, [1, 2]


@pytest.fixture(scope="module")
def models():
    from circuits.zoo import tiny_model

    exposed = tiny_model(seed=11, n_layers=3, num_experts=N_EXPERTS, experts_per_token=TOP_K)
    from transformer_lens import HookedTransformer

    plain = HookedTransformer(copy.deepcopy(exposed.cfg), move_to_device=False).eval()
    plain.load_state_dict(exposed.state_dict())
    tokens = torch.randint(1, 200, (3, 9), generator=torch.Generator().manual_seed(2))
    return exposed, plain, tokens


@torch.no_grad()
def _router(mlp, x):
    """The router's top-k weights and experts of inputs ``x`` [n, d_model] (MoE's definition)."""
    probs = torch.softmax(x @ mlp.W_gate.weight.T, dim=-1)
    weights, chosen = probs.topk(TOP_K, dim=-1)
    return probs, weights, chosen


@torch.no_grad()
def _contribution(mlp, x, expert):
    """Expert ``expert``'s routed contribution at inputs ``x`` [n, d_model]: its output times
    its routing weight where the router chose it, zero where it did not."""
    _, weights, chosen = _router(mlp, x)
    e = mlp.experts[expert]
    out = e.W_out(torch.nn.functional.silu(e.W_gate(x)) * e.W_in(x))
    w = (weights * (chosen == expert)).sum(-1, keepdim=True)
    return out * w


def _hand_sink(plain, tokens, hooks):
    """Gu et al.'s sink score of the receiver layers, by a plain hook loop."""
    got = {}

    def keep(p, hook):
        got[hook.name] = p[:, :, :, 0].mean(dim=(1, 2))  # mean over heads and queries

    names = [f"blocks.{la}.attn.hook_pattern" for la in RECEIVERS]
    with torch.no_grad():
        plain.run_with_hooks(tokens, fwd_hooks=hooks + [(n, keep) for n in names])
    return float(torch.stack([got[n] for n in names]).mean())


def _input_at_p0(plain, tokens, layer):
    got = {}
    with torch.no_grad():
        plain.run_with_hooks(
            tokens,
            fwd_hooks=[
                (f"blocks.{layer}.ln2.hook_normalized", lambda a, hook: got.update(x=a[:, 0]))
            ],
        )
    return got["x"]


def _expert_patch_hooks(plain, layer, expert, cf_contribution):
    """Replace expert ``expert``'s routed contribution at P0 by ``cf_contribution``."""
    mlp, seen = plain.blocks[layer].mlp, {}

    def keep_input(x, hook):
        seen["x"] = x[:, 0].clone()

    def swap(out, hook):
        out[:, 0] += cf_contribution - _contribution(mlp, seen["x"], expert)
        return out

    return [
        (f"blocks.{layer}.ln2.hook_normalized", keep_input),
        (f"blocks.{layer}.hook_mlp_out", swap),
    ]


def test_exposed_experts_compute_the_same_model_and_each_expert_is_its_routed_contribution(
    models,
):
    exposed, plain, tokens = models
    with torch.no_grad():
        theirs = plain(tokens)
        ours, cache = exposed.run_with_cache(tokens)
    assert (ours - theirs).abs().max() <= 1e-6
    for layer in range(3):
        x = cache[f"blocks.{layer}.ln2.hook_normalized"].reshape(-1, exposed.cfg.d_model)
        mlp = plain.blocks[layer].mlp
        per_expert = cache[f"blocks.{layer}.mlp.hook_expert_out"]
        for e in range(N_EXPERTS):
            want = _contribution(mlp, x, e).reshape(per_expert[:, :, e].shape)
            assert (per_expert[:, :, e] - want).abs().max() <= 1e-5
        probs, _, _ = _router(mlp, x)
        router = cache[f"blocks.{layer}.mlp.hook_router_probs"]
        assert (router - probs.reshape(router.shape)).abs().max() <= 1e-6


@pytest.mark.parametrize("counterfactual", ["zero", "token:7"])
def test_an_expert_patch_equals_the_moe_block_recomputed_by_hand(models, counterfactual):
    from circuits.patching import Patcher, SinkScore, Site

    exposed, plain, tokens = models
    patcher = Patcher(exposed, tokens, counterfactual)
    sites = [Site("expert", la, expert=e) for la in (0, 1) for e in range(N_EXPERTS)]
    got = patcher.patch(sites, SinkScore(RECEIVERS))
    cf_tokens = tokens.clone()
    cf_tokens[:, 0] = 7
    diffs = []
    for site, value in zip(sites, got.values, strict=True):
        mlp = plain.blocks[site.layer].mlp
        if counterfactual == "zero":
            cf = torch.zeros(tokens.shape[0], exposed.cfg.d_model)
        else:  # the expert's routed contribution at P0 in the run on the counterfactual prompts
            cf = _contribution(mlp, _input_at_p0(plain, cf_tokens, site.layer), site.expert)
        hand = _hand_sink(plain, tokens, _expert_patch_hooks(plain, site.layer, site.expert, cf))
        diffs.append(abs(float(value) - hand))
    print(f"expert patch ({counterfactual}) max |diff| vs hand: {max(diffs):.2e}")
    assert max(diffs) <= 1e-5, max(diffs)
    # an expert the router never chooses at P0 has no contribution to remove under zero
    if counterfactual == "zero":
        _, _, chosen = _router(plain.blocks[0].mlp, _input_at_p0(plain, tokens, 0))
        unused = [e for e in range(N_EXPERTS) if not (chosen == e).any()]
        for e in unused:
            assert float(got.effects[e]) == 0.0
    # all experts of a block patched together are the block's MLP patched
    joint = patcher.patch([tuple(Site("expert", 1, expert=e) for e in range(N_EXPERTS))])
    whole = patcher.patch([Site("mlp", 1)])
    assert float(joint.values[0]) == pytest.approx(float(whole.values[0]), abs=1e-6)


def test_the_router_readout_under_a_patch_equals_the_router_recomputed_by_hand(models):
    from circuits.patching import P0Routing, Patcher, Site

    exposed, plain, tokens = models
    patcher = Patcher(exposed, tokens, "zero")
    for expert in (None, 0, 3):
        got = patcher.patch([Site("attn", 0), Site("mlp", 0)], P0Routing(1, expert))
        for site, value, detail in zip(
            ["blocks.0.hook_attn_out", "blocks.0.hook_mlp_out"],
            got.values,
            got.detail,
            strict=True,
        ):

            def zero_p0(act, hook):
                act[:, 0] = 0.0
                return act

            seen = {}
            with torch.no_grad():
                plain.run_with_hooks(
                    tokens,
                    fwd_hooks=[
                        (site, zero_p0),
                        (
                            "blocks.1.ln2.hook_normalized",
                            lambda a, hook, s=seen: s.update(x=a[:, 0]),
                        ),
                    ],
                )
            probs, _, _ = _router(plain.blocks[1].mlp, seen["x"])
            entropy = -(probs * probs.log()).sum(-1).mean()
            want = entropy if expert is None else probs[:, expert].mean()
            assert float(value) == pytest.approx(float(want), abs=1e-6)
            assert (detail - probs.mean(0)).abs().max() <= 1e-6


def test_expert_sites_are_refused_by_name_where_they_do_not_exist(models):
    from circuits.core.errors import UsageError
    from circuits.patching import P0Routing, Patcher, Site
    from circuits.zoo import tiny_model

    exposed, _, tokens = models
    with pytest.raises(UsageError, match="experts 0..3"):
        Patcher(exposed, tokens, "zero").patch([Site("expert", 0, expert=4)])
    with pytest.raises(UsageError, match="needs expert"):
        Site("expert", 0)
    dense = tiny_model(seed=0)
    with pytest.raises(UsageError, match="dense"):
        Patcher(dense, tokens, "zero").patch([Site("expert", 0, expert=0)])
    with pytest.raises(UsageError, match="dense"):
        Patcher(dense, tokens, "zero").patch([Site("attn", 0)], P0Routing(1, 0))


def test_discover_descends_into_a_selected_moe_block_as_into_an_attention_layer(models, tmp_path):
    """The expert sweep patches every expert of each selected MoE MLP alone (values equal to
    single expert patches) and their picks together; a block whose picks carry ``head_cover``
    of its effect enters the circuit as experts, and the rest of its experts are "others"."""
    import networkx as nx

    from circuits.circuit import DiscoverConfig, discover
    from circuits.circuit.record import DiscoveryRecord
    from circuits.patching import Patcher, SinkScore, Site

    exposed, _, tokens = models
    config = DiscoverConfig(
        first_receiver=2, component_threshold=0.0, head_threshold=0.0, head_cover=0.01
    )
    found = discover(exposed, tokens, config)
    record = DiscoveryRecord.of(found.record)
    assert record.expert_layers is not None and record.experts is not None
    mlp_layers = sorted(record.expert_layers)
    assert mlp_layers == [0, 1]  # threshold 0: every MLP before the last receiver is selected
    patcher = Patcher(exposed, tokens, "shift")
    sites = [Site("expert", la, expert=e) for la in mlp_layers for e in range(N_EXPERTS)]
    single = patcher.patch(sites, SinkScore(record.receiver_layers))
    rows = record.experts.by_name()
    for name, value in zip(single.names, single.values, strict=True):
        assert rows[name].value == pytest.approx(float(value), abs=1e-6)
    for layer, choice in record.expert_layers.items():
        names = [f"mlp{layer}.e{e}@p0" for e in choice.experts]
        if choice.node == "experts":
            assert set(names) <= set(record.circuit) and f"mlp{layer}@p0" not in record.circuit
    assert any(c.node == "experts" for c in record.expert_layers.values())
    others = record.faithfulness.ablated_when_kept
    in_circuit = [n for n in record.circuit if ".e" in n]
    assert all(n not in others for n in in_circuit)
    found.save(tmp_path / "moe")
    g = nx.read_graphml(tmp_path / "moe" / "circuit.graphml")
    experts = [n for n, d in g.nodes(data=True) if d.get("kind") == "expert"]
    assert sorted(experts) == sorted(in_circuit)


def test_a_dense_model_writes_no_expert_sections():
    from circuits.circuit import DiscoverConfig, discover
    from circuits.zoo import tiny_model

    tokens = torch.randint(1, 200, (2, 8), generator=torch.Generator().manual_seed(0))
    found = discover(tiny_model(seed=1, n_layers=3), tokens, DiscoverConfig(first_receiver=1))
    assert "experts" not in found.record and "expert_layers" not in found.record


def test_the_panel_shows_experts_like_heads_and_a_kept_expert_ablates_its_blocks_others(models):
    from circuits.panel import explore
    from circuits.patching import Patcher, SinkScore, Site

    exposed, _, tokens = models
    panel = explore(exposed, tokens).wait()
    try:
        assert panel.n_experts == N_EXPERTS
        shown = {c["name"] for c in panel.components if c["kind"] == "expert"}
        assert shown == {f"mlp{la}.e{e}@p0" for la in (0, 1) for e in range(N_EXPERTS)}
        panel.selected = ["mlp0.e1@p0"]
        panel.wait()
        assert not panel.error
        # kept: everything at P0 but expert 1 of block 0 ablated (its block's other experts
        # individually, not the block's whole MLP), written out site by site
        rest = [Site("embed"), Site("attn", 0), Site("attn", 1), Site("mlp", 1)]
        rest += [Site("expert", 0, expert=e) for e in (0, 2, 3)]
        patcher = Patcher(exposed, tokens, "shift")
        readout = SinkScore(panel.session.receivers)
        clean, _ = patcher.clean_value(readout)
        want = float(patcher.patch([tuple(rest)], readout).values[0]) / clean
        assert panel.result["kept"] == pytest.approx(want, abs=1e-6)
    finally:
        panel.close_workers()


def test_a_trace_checkpoint_of_an_moe_model_records_routing_and_expert_effects_and_draws_them(
    models,
):
    """``measure_checkpoint`` on an MoE model: the routing report equals the router recomputed
    by hand at P0, and each expert of blocks 0-1 has its effects; the figures draw from them."""
    from circuits.emergence.checkpoint_metrics import measure_checkpoint
    from circuits.viz.moe_figures import experts_over_training_figure, routing_over_training_figure

    exposed, plain, tokens = models
    point = measure_checkpoint(exposed, tokens, bos=False)
    for row in point["routing"]["layers"]:
        probs, _, _ = _router(
            plain.blocks[row["layer"]].mlp, _input_at_p0(plain, tokens, row["layer"])
        )
        assert row["p0_distribution"] == pytest.approx(probs.mean(0).tolist(), abs=1e-5)
        assert row["p0_expert"] == int(probs.mean(0).argmax())
    assert [r["layer"] for r in point["experts"]["layers"]] == [0, 1]
    assert all(len(r["sink_effect"]) == N_EXPERTS for r in point["experts"]["layers"])
    trace = {"checkpoints": [{"step": s, **point} for s in (0, 10, 100)]}
    fig = routing_over_training_figure(trace)
    assert fig.axes[0].get_ylabel() == "router probability (mean)"
    fig = experts_over_training_figure(trace)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "(ablated − clean) / clean" in labels  # the colour bars say what the colours mean


def test_train_builds_moe_mlps_and_its_trace_records_routing_and_experts(tmp_path):
    """``p0-circuits train --experts 4 --experts-per-token 2``: a few steps of a 3-layer MoE run,
    then ``trace`` (with the circuit): every checkpoint has routing and expert effects, the
    figures are written, and the run's model has TransformerLens' MoE blocks with expert hooks."""
    import json

    from circuits.cli import main
    from circuits.training.checkpoints import load_run_model

    run, out = tmp_path / "run", tmp_path / "trace"
    args = ["train", "--data", "bigram-backcopy", "--layers", "3", "--width", "16"]
    args += ["--heads", "1", "--context", "16", "--batch-size", "4", "--steps", "6"]
    args += ["--checkpoints", "3", "--experts", "4", "--experts-per-token", "2", "--bos"]
    assert main([*args, "--out", str(run), "--quiet"]) == 0
    model, config, _ = load_run_model(run)
    assert config.n_experts == 4 and model.cfg.num_experts == 4
    assert "blocks.0.mlp.hook_expert_out" in model.hook_dict
    assert main(["trace", str(run), "--out", str(out), "--circuit", "--quiet"]) == 0
    trace = json.loads((out / "trace.json").read_text())
    for point in trace["checkpoints"]:
        assert len(point["routing"]["layers"]) == 3
        assert [r["layer"] for r in point["experts"]["layers"]] == [0, 1]
    assert (out / "routing_over_training.png").exists()
    assert (out / "experts_over_training.png").exists()
    bad = [*args[:-3], "--experts-per-token", "5", "--out", str(tmp_path / "bad"), "--quiet"]
    assert main(bad) == 2  # a bad top-k is refused by name before anything is written
    assert not (tmp_path / "bad").exists()
