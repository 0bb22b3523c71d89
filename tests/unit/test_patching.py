"""The patching engine against TransformerLens' own ``patching`` module and independent,
hook-by-hook re-implementations (IOI path patching, finite differences for attribution)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tlp
from _tl_helpers import tl_sink_metric
from transformer_lens import ActivationCache
from transformer_lens.utilities import get_act_name

from circuits.core.errors import UsageError
from circuits.metrics import residual_norms, sink_score
from circuits.patching import (
    CacheReadout,
    P0Norm,
    Patcher,
    Receiver,
    SinkScore,
    Site,
    component_sites,
    head_sites,
)
from circuits.patching.attribution import attribution_patch, pearson
from circuits.patching.counterfactuals import shifted_tokens
from circuits.zoo import tiny_model

TOL = 1e-4
N_LAYERS = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # GQA (4 query heads share 2 KV heads) so the K/V receiver code path is the SmolLM2 one
    return tiny_model(seed=0, n_layers=N_LAYERS, n_key_value_heads=2)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 200, (4, 10), generator=torch.Generator().manual_seed(1))


@pytest.fixture()
def tl_metric(model):
    yield tl_sink_metric(model, range(N_LAYERS))
    model.reset_hooks(including_permanent=True)


@pytest.mark.parametrize("cf", ["shift", "mean", "zero"])
def test_head_and_resid_grids_match_transformer_lens(model, tokens, tl_metric, cf):
    patcher = Patcher(model, tokens, cf, max_rows=12)
    metric = SinkScore(range(N_LAYERS))
    source = ActivationCache(patcher.cf, model)
    n_heads, n_pos = model.cfg.n_heads, tokens.shape[1]

    ours = patcher.patch(head_sites(range(N_LAYERS), n_heads, positions=None), metric)
    theirs = tlp.get_act_patch_attn_head_out_all_pos(model, tokens, source, tl_metric)
    assert (ours.values.view(N_LAYERS, n_heads) - theirs).abs().max() <= TOL
    # the patches really move the metric (a no-op hook would also "match")
    assert ours.effects[:-n_heads].abs().max() > 1e-3

    sites = [
        Site("resid_pre", layer, positions=(p,)) for layer in range(N_LAYERS) for p in range(n_pos)
    ]
    ours = patcher.patch(sites, metric)
    theirs = tlp.get_act_patch_resid_pre(model, tokens, source, tl_metric)
    assert (ours.values.view(N_LAYERS, n_pos) - theirs).abs().max() <= TOL
    assert ours.effects.abs().max() > 1e-3


@pytest.mark.parametrize(
    ("kind", "tl_fn"),
    [
        ("attn", tlp.get_act_patch_attn_out),
        ("mlp", tlp.get_act_patch_mlp_out),
        ("resid_mid", tlp.get_act_patch_resid_mid),
    ],
)
def test_layer_pos_patches_match_transformer_lens(model, tokens, tl_metric, kind, tl_fn):
    patcher = Patcher(model, tokens, "shift")
    n_pos = tokens.shape[1]
    sites = [Site(kind, layer, positions=(p,)) for layer in range(N_LAYERS) for p in range(n_pos)]
    ours = patcher.patch(sites, SinkScore(range(N_LAYERS)))
    theirs = tl_fn(model, tokens, ActivationCache(patcher.cf, model), tl_metric)
    assert (ours.values.view(N_LAYERS, n_pos) - theirs).abs().max() <= TOL


def test_head_by_pos_matches_transformer_lens(model, tokens, tl_metric):
    patcher = Patcher(model, tokens, "mean")
    rows = [(layer, 0, h) for layer in range(N_LAYERS - 1) for h in range(model.cfg.n_heads)]
    index_df = pd.DataFrame(rows, columns=["layer", "pos", "head"])
    theirs = tlp.get_act_patch_attn_head_out_by_pos(
        model,
        tokens,
        ActivationCache(patcher.cf, model),
        tl_metric,
        index_axis_names=None,
        index_df=index_df,
    )
    ours = patcher.patch(
        [Site("head", la, head=h, positions=(p,)) for la, p, h in rows], SinkScore(range(N_LAYERS))
    )
    assert (ours.values - theirs).abs().max() <= TOL
    assert ours.effects.abs().max() > 1e-4


def test_batching_and_truncation_do_not_change_numbers(model, tokens):
    sites = component_sites(N_LAYERS - 1, positions=(0,)) + head_sites(
        [0, 1], model.cfg.n_heads, positions=(0,)
    )
    metric = SinkScore([1, 2])
    one = Patcher(model, tokens, "shift", max_rows=tokens.shape[0]).patch(sites, metric)
    many = Patcher(model, tokens, "shift", max_rows=1000).patch(sites, metric)
    assert torch.allclose(one.values, many.values, atol=1e-6)
    assert (one.values - one.clean).abs().max() > 1e-4  # the patches move the readout
    # and one of them equals a plain hook loop: attn0's P0 output from the shifted run
    name = get_act_name("attn_out", 0)
    shifted = torch.cat([tokens[:, -1:], tokens], dim=1)
    _, cache = model.run_with_cache(shifted, names_filter=[name])
    seen = {}

    def put(act, hook):
        act[:, 0] = cache[name][:, 1]
        return act

    def read(p, hook):
        seen[hook.layer()] = float(p[:, :, :, 0].mean())

    with torch.no_grad():
        model.run_with_hooks(
            tokens, fwd_hooks=[(name, put)] + [(get_act_name("pattern", la), read) for la in (1, 2)]
        )
    k = [x.name for x in sites].index("attn0@p0")
    assert float(one.values[k]) == pytest.approx((seen[1] + seen[2]) / 2, abs=1e-6)

    # patches starting at different blocks share one growing batch; any metric reads its rows
    def sink_l2(cache):
        return sink_score(cache[get_act_name("pattern", 2)]).mean()

    mixed = [Site("resid_pre", 2), Site("mlp", 0), Site("head", 1, head=3), Site("attn", 0)]
    for metric in (CacheReadout(sink_l2), P0Norm(2), SinkScore([1, 2])):
        a = Patcher(model, tokens, "shift", max_rows=tokens.shape[0]).patch(mixed, metric)
        b = Patcher(model, tokens, "shift", max_rows=1000).patch(mixed, metric)
        assert torch.allclose(a.values, b.values, atol=1e-6), metric.name
        assert (a.values - a.clean).abs().max() > 1e-4, metric.name
    paths = [(Site("mlp", 0), Receiver("k", 2)), (Site("head", 0, head=1), Receiver("k", 1))]
    a = Patcher(model, tokens, "shift", max_rows=tokens.shape[0]).path_patch(paths, SinkScore([2]))
    b = Patcher(model, tokens, "shift", max_rows=1000).path_patch(paths, SinkScore([2]))
    assert torch.allclose(a.values, b.values, atol=1e-6)
    # a truncated run (stop after layer 1) equals the full-model value on layer 1
    trunc = Patcher(model, tokens, "shift").patch(sites[:3], SinkScore([1]))
    full = Patcher(model, tokens, "shift").patch(sites[:3], SinkScore([1, 2]))
    assert torch.allclose(trunc.values, full.detail[:, 0], atol=1e-6)


def test_shift_counterfactual_is_the_first_token_one_place_later(model, tokens):
    patcher = Patcher(model, tokens, "shift")
    _, cache = model.run_with_cache(shifted_tokens(tokens))
    name = get_act_name("resid_post", 1)
    assert torch.allclose(patcher.cf[name][:, 0], cache[name][:, 1], atol=1e-6)
    # default prepended token: each row's own last token
    assert torch.equal(shifted_tokens(tokens)[:, 0], tokens[:, -1])
    mean = Patcher(model, tokens, "mean").cf[name]
    assert torch.allclose(mean[0, 0], patcher.clean[name][:, 1:].mean(dim=(0, 1)), atol=1e-6)


def test_p0_norm_metric_against_manual_hooks(model, tokens):
    patcher = Patcher(model, tokens, "zero")
    site = Site("attn", 0)
    res = patcher.patch([site], P0Norm(1))

    def zero_p0(act, hook):
        act[:, 0] = 0.0
        return act

    with model.hooks(fwd_hooks=[(site.hook_name, zero_p0)]):
        _, cache = model.run_with_cache(tokens)
    expected = residual_norms(cache[get_act_name("resid_post", 1)])[0]
    assert res.values[0].item() == pytest.approx(expected, abs=1e-4)
    assert res.clean == pytest.approx(
        residual_norms(patcher.clean[get_act_name("resid_post", 1)])[0], abs=1e-4
    )


def test_cache_callable_metric_equals_sink_metric(model, tokens):
    patcher = Patcher(model, tokens, "shift")
    sites = [Site("attn", 0), Site("mlp", 0), Site("head", 1, head=2)]

    def sink_l2(cache):
        return sink_score(cache[get_act_name("pattern", 2)]).mean()

    ours = patcher.patch(sites, CacheReadout(sink_l2))
    ref = patcher.patch(sites, SinkScore([2]))
    assert torch.allclose(ours.values, ref.values, atol=1e-6)
    assert ours.clean == pytest.approx(ref.clean, abs=1e-6)


def _naive_path_patch(model, tokens, patcher, sender, receiver, layers):
    """IOI path patching with hooks on the full model, no shortcuts: (1) run with the sender at
    its counterfactual and every other head and MLP frozen clean, caching the receiver input;
    (2) run with only that receiver input patched and read the sink of ``layers``."""
    clean, cf = patcher.clean, patcher.cf
    hooks = []
    for layer in range(model.cfg.n_layers):
        z, mlp = get_act_name("z", layer), get_act_name("mlp_out", layer)

        def freeze_z(act, hook, name=z):
            act[:] = clean[name]
            if sender.kind == "head" and hook.layer() == sender.layer:
                act[:, 0, sender.head] = cf[name][:, 0, sender.head]
            return act

        def freeze_mlp(act, hook, name=mlp):
            act[:] = clean[name]
            if sender.kind == "mlp" and hook.layer() == sender.layer:
                act[:, 0] = cf[name][:, 0]
            return act

        hooks += [(z, freeze_z), (mlp, freeze_mlp)]
    store = {}
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    try:
        with model.hooks(fwd_hooks=hooks):
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == receiver.hook_name)
        new_input = cache[receiver.hook_name]

        def put(act, hook):
            if receiver.kind == "mlp" or receiver.heads is None:
                act[:] = new_input
            else:
                hs = list(receiver.heads)
                act[:, :, hs] = new_input[:, :, hs]
            return act

        def record(pattern, hook):
            store[hook.layer()] = sink_score(pattern).mean()

        fwd = [(receiver.hook_name, put)] + [(get_act_name("pattern", la), record) for la in layers]
        model.run_with_hooks(tokens, fwd_hooks=fwd)
    finally:
        model.set_use_split_qkv_input(False)
        model.set_use_hook_mlp_in(False)
    return torch.stack([store[la] for la in layers]).mean().item()


@pytest.mark.parametrize("post_norm", [False, True])
def test_path_patching_matches_naive_ioi(tokens, post_norm):
    model = tiny_model(
        seed=3, n_layers=N_LAYERS, n_key_value_heads=2, use_normalization_before_and_after=post_norm
    )
    patcher = Patcher(model, tokens, "shift")
    paths = [
        (Site("head", 0, head=1), Receiver("k", 1)),
        (Site("head", 0, head=3), Receiver("q", 2, heads=(0, 2))),
        (Site("mlp", 0), Receiver("k", 2, heads=(1,))),  # a KV head: feeds query heads 2, 3
        (Site("head", 0, head=0), Receiver("mlp_in", 0)),  # attn -> MLP inside block 0
        (Site("mlp", 0), Receiver("v", 1)),
    ]
    layers = [1, 2]
    ours = patcher.path_patch(paths, SinkScore(layers))
    for (sender, receiver), value in zip(paths, ours.values.tolist(), strict=True):
        expected = _naive_path_patch(model, tokens, patcher, sender, receiver, layers)
        assert value == pytest.approx(expected, abs=TOL), f"{sender.name}->{receiver.name}"
    assert (ours.values - ours.clean).abs().max() > 1e-4
    # the model's flags are restored after path patching
    assert not model.cfg.use_split_qkv_input and not model.cfg.use_hook_mlp_in
    # default metric: the receiver's own layer for k/q
    default = patcher.path_patch(paths[:1])
    single = patcher.path_patch(paths[:1], SinkScore([1]))
    assert default.values[0].item() == pytest.approx(single.values[0].item(), abs=1e-6)


def test_attribution_matches_finite_differences(model, tokens):
    patcher = Patcher(model, tokens, "shift")
    sites = [Site("attn", 0), Site("mlp", 0), Site("head", 1, head=1), Site("embed")]
    metric = SinkScore([1, 2])
    attr = attribution_patch(patcher, sites, metric)
    exact = patcher.patch(sites, metric)
    assert attr.clean == pytest.approx(exact.clean, abs=1e-6)
    # prompts split over several backward passes: the same estimate as one pass over all
    one_pass = attribution_patch(patcher, sites, metric, prompts_per_pass=tokens.shape[0])
    per_prompt = attribution_patch(patcher, sites, metric, prompts_per_pass=1)
    assert torch.allclose(one_pass.values, per_prompt.values, atol=1e-6)
    assert torch.allclose(one_pass.values, attr.values, atol=1e-6)
    # the gradient term is the limit of a patch scaled towards zero
    eps = 1e-3
    for name in {s.hook_name for s in sites}:
        patcher.cf[name] = patcher.clean[name] + eps * (patcher.cf[name] - patcher.clean[name])
    small = patcher.patch(sites, metric)
    fd = small.effects / eps
    assert torch.allclose(attr.effects, fd, rtol=0.05, atol=1e-4), (attr.effects, fd)
    assert pearson(attr.effects, fd) > 0.99


def test_bad_input_fails_before_compute(model, tokens):
    patcher = Patcher(model, tokens, "shift")
    calls = []
    model.add_hook(
        get_act_name("resid_pre", 0), lambda act, hook: calls.append(1), is_permanent=True
    )
    try:
        with pytest.raises(UsageError, match="outside the prompt"):
            patcher.patch([Site("attn", 0, positions=(tokens.shape[1],))], SinkScore([2]))
        with pytest.raises(UsageError, match="head index 4 out of range"):
            patcher.patch([Site("head", 0, head=4)], SinkScore([2]))
        with pytest.raises(UsageError, match="layer 7 out of range"):
            patcher.patch([Site("mlp", 7)], SinkScore([2]))
        with pytest.raises(UsageError, match="not after sender"):
            patcher.path_patch([(Site("mlp", 1), Receiver("k", 1))])
        with pytest.raises(UsageError, match="not after sender"):
            patcher.path_patch([(Site("head", 1, head=0), Receiver("q", 0))])
        with pytest.raises(UsageError, match="KV heads 0..1"):
            patcher.path_patch([(Site("mlp", 0), Receiver("k", 1, heads=(2,)))])
        with pytest.raises(UsageError, match="no patch can change the readout.*mlp"):
            patcher.patch([Site("mlp", N_LAYERS - 1)])  # the default receivers end before it
        with pytest.raises(UsageError, match="no patch can change the readout"):
            patcher.patch([Site("attn", 2)], SinkScore([1]))
        assert calls == []  # nothing ran
        with pytest.raises(UsageError, match="must return a scalar"):
            patcher.patch(
                [Site("attn", 0)], lambda cache: cache[get_act_name("pattern", 1)].mean(dim=0)
            )
        assert len(calls) == 1  # only the clean run that checks the metric, no patched run
    finally:
        model.reset_hooks(including_permanent=True)
    with pytest.raises(UsageError, match="unknown counterfactual"):
        Patcher(model, tokens, "resample")
