"""The P0-stream estimate (``circuits.patching.stream``) on every block structure.

Two independent references:
- the model itself, run with the patch and every position but P0 reset to its clean residual at
  each block's input (the quantity the estimate claims to compute, by brute force);
- exact patching (``Patcher.patch``) on a model whose attention reads no values (W_V = b_V = 0),
  where P0 can reach the other positions only through its keys, so the estimate must be exact.
"""

from __future__ import annotations

import pytest
import torch
from _variants import N_LAYERS, VARIANTS, build, p0_sites
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.utilities import get_act_name

from circuits.core.errors import UsageError
from circuits.metrics.attention import sink_score
from circuits.patching import CacheReadout, Patcher, SinkScore, Site
from circuits.patching.stream import p0_stream_estimate

TOL = 1e-5
LAYERS = list(range(N_LAYERS))


def _frozen_sink(model, tokens, patcher: Patcher, site: Site) -> float:
    """The sink score with ``site`` patched at P0 and positions 1.. held at their clean residual
    at every block's input: the model's own forward, hook by hook."""
    store = {}
    cf = patcher.cf

    def setter(act, hook):
        if site.head is None:
            act[:, [0]] = cf[site.hook_name][:, [0]]
        else:
            act[:, [0], site.head] = cf[site.hook_name][:, [0], site.head]
        return act

    def freeze(act, hook):
        act[:, 1:] = patcher.clean[hook.name][:, 1:]
        return act

    def record(pattern, hook):
        store[hook.layer()] = sink_score(pattern).mean()

    hooks = [(site.hook_name, setter)]
    hooks += [(get_act_name("resid_pre", la), freeze) for la in LAYERS]
    hooks += [(get_act_name("pattern", la), record) for la in LAYERS]
    with torch.inference_mode():
        model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None)
    return torch.stack([store[la] for la in LAYERS]).mean().item()


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def case(request):
    model = build(request.param)
    tokens = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(2))
    return request.param, model, tokens


@pytest.mark.parametrize("cf", ["shift", "mean"])
def test_estimate_equals_the_model_with_other_positions_frozen(case, cf):
    name, model, tokens = case
    patcher = Patcher(model, tokens, cf, progress=False)
    sites = p0_sites(model.cfg)
    ours = p0_stream_estimate(patcher, sites, SinkScore(LAYERS), patches_per_pass=7)
    frozen = torch.tensor([_frozen_sink(model, tokens, patcher, s) for s in sites])
    diff = (ours.values - frozen).abs().max().item()
    assert diff <= TOL, f"{name}: max |diff| {diff}"
    assert ours.effects.abs().max() > 1e-3  # the patches really move the sink


def _valueless(name: str) -> HookedTransformer:
    model = build(name)
    with torch.no_grad():
        for pname, p in model.named_parameters():  # _W_V, _b_V: grouped-query attention's own
            if pname.endswith(("W_V", "b_V")):
                p.zero_()
    return model


@pytest.mark.parametrize(
    "name",
    [
        "LN, learned positions (GPT-2)",
        "RMS, rotary, gated SiLU (Llama)",
        "grouped-query attention",
        "attention score softcap (Gemma 2)",
        "learned attention sinks (GPT-OSS)",
        "norms before and after (Gemma 2/3)",
    ],
)
def test_estimate_is_exact_patching_when_no_position_reads_p0_values(name):
    model = _valueless(name)
    tokens = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(3))
    # mean, not shift: without values a rotary model's residual at a token ignores its position
    patcher = Patcher(model, tokens, "mean", progress=False)
    sites = [s for s in p0_sites(model.cfg) if s.kind != "head"]  # heads write zero here
    metric = SinkScore(LAYERS)
    exact = patcher.patch(sites, metric)
    ours = p0_stream_estimate(patcher, sites, metric)
    assert ours.clean == pytest.approx(exact.clean, abs=1e-7)
    diff = (ours.effects - exact.effects).abs().max().item()
    assert diff <= TOL, f"{name}: max |diff| {diff}"
    assert exact.effects.abs().max() > 1e-3


def test_estimate_misses_the_value_route_where_values_matter():
    """The estimate is not exact patching in general: on the random GPT-2 variant (values read)
    it differs from it, which the two tests above would not show."""
    model = build("LN, learned positions (GPT-2)")
    tokens = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(2))
    patcher = Patcher(model, tokens, "shift", progress=False)
    sites = [Site("attn", 0), Site("mlp", 0)]
    exact = patcher.patch(sites, SinkScore([1, 2])).effects
    ours = p0_stream_estimate(patcher, sites, SinkScore([1, 2])).effects
    assert (exact - ours).abs().max() > 1e-3


def test_bad_input_is_refused_with_the_fix():
    model = build("LN, learned positions (GPT-2)")
    tokens = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    patcher = Patcher(model, tokens, "shift", progress=False)
    with pytest.raises(UsageError, match="position 0 only"):
        p0_stream_estimate(patcher, [Site("attn", 0, positions=(1,))])
    with pytest.raises(UsageError, match="position 0 only"):
        p0_stream_estimate(patcher, [Site("attn", 0, positions=None)])
    with pytest.raises(UsageError, match="sink score only"):
        p0_stream_estimate(patcher, [Site("attn", 0)], CacheReadout(lambda cache: 0.0))
    with pytest.raises(UsageError, match="no sites"):
        p0_stream_estimate(patcher, [])
    with pytest.raises(UsageError, match="patches_per_pass"):
        p0_stream_estimate(patcher, [Site("attn", 0)], patches_per_pass=0)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=8, d_vocab=32, act_fn="gelu",
        attention_dir="bidirectional", device="cpu",
    )  # fmt: skip
    bidir = HookedTransformer(cfg, move_to_device=False).eval()
    patcher = Patcher(bidir, tokens % 32, "shift", progress=False)
    with pytest.raises(UsageError, match="causal attention"):
        p0_stream_estimate(patcher, [Site("attn", 0)], SinkScore([1]))
