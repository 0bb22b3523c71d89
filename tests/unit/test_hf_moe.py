"""Mixture-of-experts Hugging Face folders (tiny configs, random weights, written by
transformers): Mixtral, OLMoE, Qwen3-MoE and gpt-oss, on TransformerLens 3 and on 4's bridges.

Logits equal transformers'; the whole MoE block patched at P0 equals a plain hook loop; expert
sites exist where the model exposes each expert's routed contribution (TransformerLens 3's
``MoE``: Mixtral, OLMoE) and are refused by name with the reason elsewhere.
"""

from __future__ import annotations

import pytest
import torch
from _hf_helpers import MOE_FAMILIES, save_family

from circuits.backend import ON_BRIDGE
from circuits.core.errors import UsageError

IDS = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45], [2, 6, 10, 14] * 3])
TL3_CANNOT_CONVERT = {"qwen3_moe"}  # TransformerLens 3.9 has no Qwen3-MoE converter
EXPOSED = {"mixtral", "olmoe"}  # TransformerLens 3's MoE class (gpt-oss has its own)


@pytest.fixture(scope="module", params=list(MOE_FAMILIES))
def family(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    reference = save_family(request.param, folder)
    return request.param, folder, reference


def _load(model_type, folder):
    from circuits.zoo.load import load_model

    if model_type in TL3_CANNOT_CONVERT and not ON_BRIDGE:
        with pytest.raises(UsageError, match=model_type):
            load_model(str(folder), progress=False)
        pytest.skip(f"{model_type}: TransformerLens 3 cannot convert it (refused by name)")
    return load_model(str(folder), progress=False).model


def test_an_moe_folder_loads_like_transformers(family):
    model_type, folder, reference = family
    model = _load(model_type, folder)
    with torch.no_grad():
        diff = (model(IDS) - reference(IDS).logits).abs().max().item()
    assert diff <= 1e-4, f"{model_type}: logits differ by {diff}"


def test_the_moe_block_at_p0_equals_a_plain_hook_loop(family):
    from circuits.patching import Patcher, SinkScore, Site

    model_type, folder, _ = family
    model = _load(model_type, folder)
    got = Patcher(model, IDS, "zero").patch([Site("mlp", 0)], SinkScore([1]))

    def zero_p0(act, hook):
        act[:, 0] = 0.0
        return act

    seen = {}
    with torch.no_grad():
        model.run_with_hooks(
            IDS,
            fwd_hooks=[
                ("blocks.0.hook_mlp_out", zero_p0),
                ("blocks.1.attn.hook_pattern", lambda p, hook: seen.update(p=p[..., 0].mean())),
            ],
        )
    assert float(got.values[0]) == pytest.approx(float(seen["p"]), abs=1e-5)


def test_expert_sites_where_the_model_exposes_them_and_refused_by_name_elsewhere(family):
    from circuits.patching import Patcher, SinkScore, Site

    model_type, folder, _ = family
    model = _load(model_type, folder)
    patcher = Patcher(model, IDS, "zero")
    experts = [Site("expert", 0, expert=e) for e in range(model.cfg.num_experts)]
    if ON_BRIDGE or model_type not in EXPOSED:
        reason = "TransformerLens 4 bridge" if ON_BRIDGE else "gpt-oss"
        with pytest.raises(UsageError, match=reason):
            patcher.patch(experts[:1], SinkScore([1]))
        return
    _, cache = model.run_with_cache(IDS)
    summed = cache["blocks.0.mlp.hook_expert_out"].sum(2)
    assert (summed - cache["blocks.0.hook_mlp_out"]).abs().max() <= 1e-6
    joint = patcher.patch([tuple(experts)], SinkScore([1]))
    whole = patcher.patch([Site("mlp", 0)], SinkScore([1]))
    assert float(joint.values[0]) == pytest.approx(float(whole.values[0]), abs=1e-6)


def test_measure_reports_routing_and_discover_runs_on_an_moe_folder(family, tmp_path):
    """The CLI on an MoE folder: ``measure`` writes P0's routing per block where the experts are
    exposed (TransformerLens 3's MoE) and none elsewhere; ``discover`` runs end to end."""
    import json

    from circuits.cli import main

    model_type, folder, _ = family
    _load(model_type, folder)  # skips where TransformerLens cannot convert the family
    out = tmp_path / "m"
    argv = ["measure", "--model", str(folder), "--max-tokens", "16", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((out / "sink_metrics.json").read_text())
    exposed = model_type in EXPOSED and not ON_BRIDGE
    assert ("routing" in metrics) == exposed
    if exposed:
        assert [r["layer"] for r in metrics["routing"]["layers"]] == [0, 1]
        assert (out / "routing.png").exists() or "routing" in (out / "report.html").read_text()
    argv = ["discover", "--model", str(folder), "--n-prompts", "2", "--n-tokens", "12"]
    assert main([*argv, "--first-receiver", "1", "--out", str(tmp_path / "d"), "--quiet"]) == 0
