"""Our patching engine against TransformerLens' ``patching`` module on the real SmolLM2."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tlp
from _tl_helpers import tl_sink_metric
from transformer_lens import ActivationCache

from circuits.patching import Patcher, SinkScore, Site

TOL = 1e-4


def test_smollm2_head_patches_match_transformer_lens(smollm2):
    model = smollm2.model
    toks = torch.stack(
        [
            smollm2.encode(t, bos=False)[0, :12]
            for t in [
                "The old lighthouse stood at the edge of the cliff, watching ships",
                "Numbers grow quickly when you double them every single day of the",
            ]
        ]
    )
    layers = [1, 2, 3]
    patcher = Patcher(model, toks, "shift")
    rows = [(0, h) for h in range(model.cfg.n_heads)] + [(1, 4)]
    metric_fn = tl_sink_metric(model, layers)
    try:
        theirs = tlp.get_act_patch_attn_head_out_all_pos(
            model,
            toks,
            ActivationCache(patcher.cf, model),
            metric_fn,
            index_axis_names=None,
            index_df=pd.DataFrame(rows, columns=["layer", "head"]),
        )
    finally:
        model.reset_hooks(including_permanent=True)
    ours = patcher.patch(
        [Site("head", la, head=h, positions=None) for la, h in rows], SinkScore(layers)
    )
    assert (ours.values - theirs).abs().max() <= TOL
    assert ours.effects.abs().max() > 1e-3
    # P0-only patches of the whole layer-0 attention and MLP move the sink of later layers
    p0 = patcher.patch([Site("attn", 0), Site("mlp", 0)], SinkScore(layers))
    assert p0.effects.abs().max() > 1e-3


def test_smollm2_chosen_first_token_and_output_readouts_equal_a_plain_hook_loop(smollm2):
    """P0 replaced by the tokenizer's BOS (``token:<bos>``), read by the next-token loss, KL and
    a logit difference: each equals SmolLM2 run with the same activations set by plain hooks and
    its own logits."""
    import torch.nn.functional as F

    from circuits.patching import KLToClean, LogitDifference, NextTokenLoss

    model = smollm2.model
    toks = torch.stack(
        [
            smollm2.encode(t, bos=False)[0, :13]
            for t in [
                "The old lighthouse stood at the edge of the cliff, watching ships pass",
                "Numbers grow quickly when you double them every single day of the year, until",
            ]
        ]
    )
    bos = smollm2.tokenizer.bos_token_id
    assert bos == smollm2.bos_token_id == 0  # one meaning of <bos>: the token --bos prepends
    patcher = Patcher(model, toks, "token:<bos>")
    assert patcher.counterfactual.describe()["first_token"] == bos
    cf_toks = toks.clone()
    cf_toks[:, 0] = bos
    _, cf = model.run_with_cache(cf_toks)
    with torch.no_grad():
        clean_logits = model(toks)
    sites = [Site("embed"), Site("attn", 0), Site("mlp", 0), Site("mlp", 11)]
    readouts = {
        "loss": (
            NextTokenLoss(),
            lambda lg: F.cross_entropy(lg[:, :-1].flatten(0, 1), toks[:, 1:].flatten()),
        ),
        "kl": (
            KLToClean(),
            lambda lg: (
                F.kl_div(
                    lg.log_softmax(-1),
                    clean_logits.log_softmax(-1),
                    log_target=True,
                    reduction="none",
                )
                .sum(-1)
                .mean()
            ),
        ),
        "ld": (
            LogitDifference(toks[:, -1].tolist(), toks[:, 1].tolist(), position=-2),
            lambda lg: (lg[[0, 1], -2, toks[:, -1]] - lg[[0, 1], -2, toks[:, 1]]).mean(),
        ),
    }
    for name, (readout, by_hand) in readouts.items():
        res = patcher.patch(sites, readout)
        assert res.clean == pytest.approx(float(by_hand(clean_logits)), abs=2e-4), name
        for site, value in zip(sites, res.values, strict=True):

            def setter(act, hook, h=site.hook_name):
                act[:, 0] = cf[h][:, 0]
                return act

            with torch.no_grad():
                logits = model.run_with_hooks(toks, fwd_hooks=[(site.hook_name, setter)])
            assert float(value) == pytest.approx(float(by_hand(logits)), abs=2e-4), (name, site)
        assert (res.values - res.clean).abs().max() > 1e-3, name  # the patches matter
