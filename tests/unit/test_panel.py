"""The live patching panel's Python side, driven as the front end drives it (setting ``selected``
and the controls): its numbers equal the ``Patcher``'s and a plain hook loop's."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.utilities import get_act_name

from circuits.circuit.graph import CircuitGraph
from circuits.core.errors import UsageError
from circuits.panel import explore
from circuits.patching import Patcher, SinkScore, Site
from circuits.zoo import tiny_model

N_LAYERS = 4


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=5, n_layers=N_LAYERS)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(1, 200, (3, 12), generator=torch.Generator().manual_seed(6))


def _plain_sink(model, tokens, hooks, layers):
    got = {}

    def keep(p, hook):
        got[hook.layer()] = float(p[..., 0].mean())

    reads = [(get_act_name("pattern", la), keep) for la in layers]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks + reads)
    return [got[la] for la in layers]


def test_a_click_gives_the_exact_numbers(model, tokens, tmp_path):
    panel = explore(model, tokens).wait()
    layers = list(range(2, N_LAYERS))
    assert panel.receivers == layers and panel.effects_kind == "exact"
    comps = {c["name"]: c for c in panel.components}
    assert {"embed@p0", "attn0@p0", "mlp1@p0", "attn1.h2@p0"} <= set(comps)
    # the map's colours come from exact single effects equal to Patcher's
    patcher = Patcher(model, tokens, "shift")
    single = patcher.patch([Site("mlp", 0)], SinkScore(layers))
    assert comps["mlp0@p0"]["relative"] == pytest.approx(float(single.relative[0]), abs=1e-6)

    panel.selected = ["attn0@p0", "mlp0@p0"]  # what a click does
    panel.wait()
    r = panel.result
    assert r["stage"] == "exact" and r["selection"] == ["attn0@p0", "mlp0@p0"]
    cf = patcher.cf

    def setter(name):
        def hook(act, hook):
            act[:, 0] = cf[name][:, 0]
            return act

        return (name, hook)

    hooks = [setter("blocks.0.hook_attn_out"), setter("blocks.0.hook_mlp_out")]
    assert r["patched"] == pytest.approx(_plain_sink(model, tokens, hooks, layers), abs=1e-6)
    assert r["clean"] == pytest.approx(_plain_sink(model, tokens, [], layers), abs=1e-6)
    clean = sum(r["clean"]) / len(layers)
    assert r["ablated"] == pytest.approx(sum(r["patched"]) / len(layers) / clean, abs=1e-6)
    others = [s for s in panel.session.components if s.name not in r["selection"]]
    kept = patcher.patch([tuple(others)], SinkScore(layers)).values[0] / clean
    assert r["kept"] == pytest.approx(float(kept), abs=1e-6)
    # the receiver head's pattern before and after the patch: the plain hook loop's
    layer, head = panel.session.head
    got = {}

    def keep_pattern(p, hook):
        got[len(got)] = p[0, head].detach().clone()

    for key, extra in (("clean", []), ("patched", hooks)):
        got.clear()
        with torch.no_grad():
            model.run_with_hooks(
                tokens, fwd_hooks=[*extra, (get_act_name("pattern", layer), keep_pattern)]
            )
        assert torch.allclose(torch.tensor(r[f"pattern_{key}"]), got[0], atol=1e-6)
    moved = torch.tensor(r["pattern_patched"]) - torch.tensor(r["pattern_clean"])
    assert moved.abs().max() > 1e-3  # the patch moves the pattern: the check is not vacuous
    assert r["estimate"] is not None

    out = panel.export(tmp_path / "sel")
    g = CircuitGraph.load(out / "circuit.graphml")
    assert set(g.g.nodes) == {"attn0@p0", "mlp0@p0"}
    assert g.graph_attrs["faithfulness_kept"] == pytest.approx(r["kept"], abs=1e-6)
    assert g.graph_attrs["counterfactual"] == "shift"


def test_changing_the_counterfactual_and_readout_reasks_the_question(model, tokens):
    panel = explore(model, tokens).wait()
    panel.selected = ["mlp0@p0"]
    panel.counterfactual = "zero"
    panel.wait()
    assert panel.session.patcher.counterfactual.spec == "zero"
    zero = Patcher(model, tokens, "zero").patch([Site("mlp", 0)], SinkScore([2, 3]))
    assert panel.result["patched"] == pytest.approx(zero.detail[0].tolist(), abs=1e-6)
    panel.counterfactual = "no-such-thing"
    panel.wait()
    assert (
        "unknown counterfactual" in panel.error and panel.counterfactual == "zero"
    )  # refused with the list, nothing lost
    assert panel.session.patcher.counterfactual.spec == "zero"
    panel.readout = "next-token loss"
    panel.wait()
    assert panel.result["layers"] == [-1] and len(panel.result["patched"]) == 1


def test_path_mode_and_bad_selections(model, tokens):
    panel = explore(model, tokens).wait()
    panel.path_mode, panel.path_layer = "k", 2
    panel.selected = ["mlp0@p0"]
    panel.wait()
    patcher = Patcher(model, tokens, "shift")
    from circuits.patching import Receiver

    want = patcher.path_patch([(Site("mlp", 0), Receiver("k", 2))], SinkScore([2, 3]))
    assert panel.result["paths"]["mlp0@p0->attn2.k"] == pytest.approx(
        float(want.effects[0]), abs=1e-6
    )
    # what the panel shows is the session's last answer stage, the one the parity compares
    assert panel.result == panel.session.answer(["mlp0@p0"], ("k", 2)).to_dict()
    with pytest.raises(UsageError, match="unknown component"):
        panel.session.site("mlp99@p0")
    panel.selected = []
    panel.wait()
    with pytest.raises(UsageError, match="nothing is selected"):
        panel.export()


def test_the_panel_draws_a_sink_head_first(model, tokens):
    """The default receiver head is the receiver head attending to P0 most (queries q >= 1,
    mean over prompts), found here from a plain cache."""
    panel = explore(model, tokens).wait()
    try:
        _, cache = model.run_with_cache(tokens)
        best = max(
            (float(cache["pattern", la][:, h, 1:, 0].mean()), la, h)
            for la in panel.session.receivers
            for h in range(model.cfg.n_heads)
        )
        assert list(panel.head) == [best[1], best[2]]
    finally:
        panel.close_workers()
