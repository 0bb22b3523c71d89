"""Our patching engine against TransformerLens' ``patching`` module on the real SmolLM2."""

from __future__ import annotations

import pandas as pd
import torch
import transformer_lens.patching as tlp
from _tl_helpers import tl_sink_metric
from transformer_lens import ActivationCache

from circuits.patching import Patcher, SinkMetric, Site

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
        [Site("head", la, head=h, positions=None) for la, h in rows], SinkMetric(layers)
    )
    assert (ours.values - theirs).abs().max() <= TOL
    assert ours.effects.abs().max() > 1e-3
    # P0-only patches of the whole layer-0 attention and MLP move the sink of later layers
    p0 = patcher.patch([Site("attn", 0), Site("mlp", 0)], SinkMetric(layers))
    assert p0.effects.abs().max() > 1e-3
