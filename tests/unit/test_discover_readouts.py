"""``discover --readout``: a circuit for another question than the sink, its effects checked
against plain hook loops (no engine code) on the planted circuit model of ``test_discover``."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from transformer_lens.utilities import get_act_name

from circuits.circuit import DiscoverConfig, discover
from circuits.cli import main
from circuits.core.errors import UsageError
from circuits.patching import Patcher
from tests.unit.test_discover import build_circuit_model

TOKENS = torch.randint(0, 8, (4, 12), generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def model():
    return build_circuit_model()


def _hook_names(site: dict) -> str:
    kind, layer = site["kind"], site.get("layer")
    return {
        "embed": get_act_name("embed"),
        "attn": get_act_name("attn_out", layer),
        "head": f"{get_act_name('z', layer)}:{site.get('head')}",
        "mlp": get_act_name("mlp_out", layer),
    }[kind]


def _run(model, names: list[str], cf: dict, read):
    """``read(logits)`` with the outputs at P0 of ``names`` set to the counterfactual's
    (``name:h``: head h of that ``hook_z``)."""

    def put(act, hook, head=None):
        if head is None:
            act[:, 0] = cf[hook.name][:, 0]
        else:
            act[:, 0, head] = cf[hook.name][:, 0, head]
        return act

    hooks = []
    for n in names:
        name, _, head = n.partition(":")
        hooks.append((name, functools.partial(put, head=int(head) if head else None)))
    with torch.inference_mode():
        logits = model.run_with_hooks(TOKENS, fwd_hooks=hooks)
    return float(read(logits.float()))


def _loss(logits):
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), TOKENS[:, 1:].flatten())


def _everything(model) -> list[str]:
    n = model.cfg.n_layers - 1  # first_receiver 1: components of layers 0 .. n-2, and embed
    return [get_act_name("embed")] + [
        get_act_name(a, la) for la in range(n) for a in ("attn_out", "mlp_out")
    ]


def test_a_loss_circuit_measures_shares_of_p0s_effect_as_a_hook_loop_does(model):
    """Every component effect is (loss patched - clean) / (clean - floor), the floor every P0
    component at the counterfactual; kept / ablated are (loss - floor) / (clean - floor)."""
    found = discover(
        model, TOKENS, DiscoverConfig(readout="loss", first_receiver=1, progress=False)
    )
    rec = found.record
    cf = Patcher(model, TOKENS, "shift").cf
    clean = _run(model, [], cf, _loss)
    floor = _run(model, _everything(model), cf, _loss)
    assert rec["readout"]["clean"] == pytest.approx(clean, abs=1e-5)
    assert rec["readout"]["reference"] == pytest.approx(floor, abs=1e-5)
    assert rec["readout"]["reference_is"] == "floor"
    assert abs(clean - floor) > 1e-3  # the question has an answer on this model
    for row in rec["components"]["effects"]:
        site = row["sites"][0]
        patched = _run(model, [_hook_names(site)], cf, _loss)
        assert row["value"] == pytest.approx(patched, abs=1e-5)
        assert row["relative"] == pytest.approx((patched - clean) / (clean - floor), abs=1e-4)
    faith = rec["faithfulness"]
    others = faith["ablated_when_kept"]
    kept = _run(model, [_hook_names(_site(n)) for n in others], cf, _loss)
    assert faith["kept"] == pytest.approx((kept - floor) / (clean - floor), abs=1e-4)
    assert faith["floor"] == pytest.approx(0.0, abs=1e-6)
    assert "next-token loss" in found.verdict and "paper's prediction" not in found.verdict
    assert "matches" not in found.verdict


def _site(name: str) -> dict:
    kind_layer = name.split("@")[0]
    if kind_layer == "embed":
        return {"kind": "embed"}
    if ".h" in kind_layer:  # attnL.hH
        layer, head = kind_layer.removeprefix("attn").split(".h")
        return {"kind": "head", "layer": int(layer), "head": int(head)}
    kind = kind_layer.rstrip("0123456789")
    return {"kind": kind, "layer": int(kind_layer[len(kind) :])}


def test_a_logit_difference_circuit_and_kl_equal_hook_loops(model):
    """logit(3) - logit(5) at the last position and KL(clean || patched): clean, floor and each
    component's value against plain hooks."""
    cf = Patcher(model, TOKENS, "shift").cf

    def diff(logits):
        return (logits[:, -1, 3] - logits[:, -1, 5]).mean()

    with torch.inference_mode():
        clean_logp = model(TOKENS).float().log_softmax(-1)

    def kl(logits):
        logp = logits.log_softmax(-1)
        return (clean_logp.exp() * (clean_logp - logp)).sum(-1).mean()

    for spec, read in (("logit-diff:3,5", diff), ("kl", kl)):
        rec = discover(
            model,
            TOKENS,
            DiscoverConfig(readout=spec, first_receiver=1, curve=False, progress=False),
        ).record
        clean = _run(model, [], cf, read)
        floor = _run(model, _everything(model), cf, read)
        assert rec["readout"]["clean"] == pytest.approx(clean, abs=1e-5), spec
        assert rec["readout"]["reference"] == pytest.approx(floor, abs=1e-5), spec
        for row in rec["components"]["effects"]:
            patched = _run(model, [_hook_names(row["sites"][0])], cf, read)
            assert row["value"] == pytest.approx(patched, abs=1e-5), (spec, row["name"])
            assert row["relative"] == pytest.approx(
                (patched - clean) / (clean - floor), abs=1e-4
            ), (spec, row["name"])


def test_a_readout_p0_does_not_move_is_refused(model):
    """logit(3) - logit(3) is 0 whatever is patched: nothing to explain, said in one line."""
    with pytest.raises(UsageError, match="P0's components do not move it"):
        discover(model, TOKENS, DiscoverConfig(readout="logit-diff:3,3", progress=False))
    with pytest.raises(UsageError, match="unknown readout 'loss2'"):
        DiscoverConfig(readout="loss2")


def test_the_readout_flag_is_checked_before_anything_is_written(tmp_path, capsys):
    for bad in ("logit-diff:7", "perplexity"):
        with pytest.raises(SystemExit) as err:
            main(["discover", "--model", "tiny", "--readout", bad, "--out", str(tmp_path / "o")])
        assert err.value.code == 2
        msg = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--readout" in msg and ("logit-diff" in msg or "choose one of" in msg)
        assert not (tmp_path / "o").exists()


def test_the_views_of_a_loss_circuit_say_loss_not_sink(model, tmp_path):
    """Report, figures, graph legend and DOT labels follow the readout asked: the component
    heatmap's colour bar is a share of P0's effect on the loss, the graph's legend and the DOT
    labels say so, the curve's star is the circuit's own f (= kept, the floor being the curve's
    empty end), and the page's title names the loss."""
    from circuits.circuit.export import to_dot
    from circuits.viz.curve_figure import faithfulness_curve_figure
    from circuits.viz.graph_figure import circuit_graph_figure
    from circuits.viz.patching_figures import component_heatmap_figure

    found = discover(
        model, TOKENS, DiscoverConfig(readout="loss", first_receiver=1, progress=False)
    )
    rec = found.record
    bar = component_heatmap_figure(rec).axes[1].get_ylabel()
    assert "next-token loss" in bar and "P0's effect" in bar and "sink" not in bar
    legend = [
        t.get_text()
        for t in circuit_graph_figure(found.graph, record=rec).axes[0].get_legend().get_texts()
    ]
    assert "patch removes P0's effect on the next-token loss" in legend
    assert not any("sink" in t for t in legend)
    dot = to_dot(found.graph.g)
    assert "of P0's effect" in dot and "% of sink" not in dot
    star = [ln for ln in faithfulness_curve_figure(rec).axes[0].lines if ln.get_marker() == "*"][0]
    assert star.get_ydata()[0] == pytest.approx(rec["faithfulness"]["kept"], abs=1e-6)
    found.save(tmp_path / "d")
    html = _report(tmp_path / "d")
    assert "P0 circuit for the next-token loss" in html
    assert "% of the clean sink" not in html


def _report(path) -> str:
    from circuits.viz.report import build_report

    build_report(path)
    return (path / "report.html").read_text()
