"""The structure matrix: the patching engine is exact on every block structure TransformerLens
builds, against a naive hook-by-hook computation and TransformerLens' own ``patching`` module.

For each variant, a tiny random-init model (random, non-zero biases unless the variant turns them
off) and every kind of patch the engine offers: the embedding, the residual stream before /
between / after the sublayers, attention and MLP outputs, every head, every head at every
position, a multi-site patch, under every counterfactual; IOI path patching into queries, keys,
values and MLP inputs; and attribution patching against a finite-difference limit.
"""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp
from _tl_helpers import tl_sink_metric
from _variants import N_LAYERS, VARIANTS, build, p0_sites
from transformer_lens import ActivationCache
from transformer_lens.utilities import get_act_name

from circuits.core.errors import UsageError
from circuits.metrics.attention import sink_score
from circuits.patching import Patcher, Receiver, SinkScore, Site
from circuits.patching.attribution import attribution_patch
from circuits.patching.nested import patch_nested
from circuits.patching.prefix import prefix_patch

TOL = 1e-5


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def case(request):
    model = build(request.param)
    tokens = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(2))
    return request.param, model, tokens


def _naive_sink(model, tokens, hooks, layers) -> float:
    store = {}

    def record(pattern, hook):
        store[hook.layer()] = sink_score(pattern).mean()

    fwd = hooks + [(get_act_name("pattern", la), record) for la in layers]
    with torch.inference_mode():
        model.run_with_hooks(tokens, fwd_hooks=fwd, return_type=None)
    return torch.stack([store[la] for la in layers]).mean().item()


def _setter(site: Site, cf):
    def hook(act, hook):
        pos = slice(None) if site.positions is None else list(site.positions)
        if site.head is None:
            act[:, pos] = cf[site.hook_name][:, pos]
        else:
            act[:, pos, site.head] = cf[site.hook_name][:, pos, site.head]
        return act

    return site.hook_name, hook


def _all_sites(cfg) -> list:
    sites: list = p0_sites(cfg) + [Site("embed", positions=None)]
    sites += [Site("head", 0, head=h, positions=None) for h in range(cfg.n_heads)]
    # prefixes longer than P0 (circuits.patching.prefix): a later position, several positions
    late = "attn" if cfg.attn_only else "mlp"
    sites += [
        Site("head", 1, head=0, positions=(0, 2)),
        Site(late, 0, positions=(3,)),
        Site("attn", 1, positions=(1,)),
    ]
    extra = (
        [Site("attn", 0), Site("mlp", 1)]
        if not cfg.attn_only
        else [Site("attn", 0), Site("attn", 1)]
    )
    same_block = [Site("head", 1, head=1), Site(late, 1, positions=(2,))]
    return [[s] for s in sites] + [extra, same_block]


@pytest.mark.parametrize("cf", ["shift", "mean", "zero"])
def test_every_activation_patch_equals_the_naive_computation(case, cf):
    name, model, tokens = case
    layers = list(range(N_LAYERS))
    patcher = Patcher(model, tokens, cf, max_rows=12)
    patches = _all_sites(model.cfg)
    ours = patcher.patch(patches, SinkScore(layers))
    naive = [
        _naive_sink(model, tokens, [_setter(s, patcher.cf) for s in p], layers) for p in patches
    ]
    diff = (ours.values - torch.tensor(naive)).abs().max().item()
    assert diff <= TOL, f"{name}: max |diff| {diff}"
    assert ours.effects.abs().max() > 1e-3  # the patches really move the metric


def test_prefix_blocks_equal_whole_blocks(case):
    """A P0 patch after the attention pattern runs its block on the prefix alone
    (circuits.patching.prefix): the same numbers as the whole-block run, and the shortcut is
    really taken for every such patch."""
    name, model, tokens = case
    layers = list(range(N_LAYERS))
    patches = _all_sites(model.cfg)
    prefixed = [p for p in patches if prefix_patch(tuple(p), model.cfg, tokens.shape[1])]
    assert len(prefixed) >= 2 * (N_LAYERS - 1)
    fast = Patcher(model, tokens, "shift", max_rows=12).patch(patches, SinkScore(layers))
    whole = Patcher(model, tokens, "shift", max_rows=12, prefix_blocks=False)
    slow = whole.patch(patches, SinkScore(layers))
    assert (fast.values - slow.values).abs().max().item() <= 1e-6, name


@pytest.mark.parametrize("with_embed", [True, False])
def test_nested_patches_equal_separate_runs(case, with_embed):
    """patch_nested (one run with every site patched, each cut continued from its residual)
    gives the numbers of one separate run per cut."""
    name, model, tokens = case
    late = "attn" if model.cfg.attn_only else "mlp"
    sites = [Site("embed")] if with_embed else []
    sites += [Site("head", 0, head=1), Site(late, 0), Site("resid_pre", 1), Site("attn", 1)]
    sites += [Site(late, 2), Site("head", 2, head=0, positions=None)]
    cuts = [0, 1, 2]
    patcher = Patcher(model, tokens, "zero", max_rows=6)
    for metric in (SinkScore(range(N_LAYERS)), SinkScore([1, 2])):
        ours = patch_nested(patcher, sites, cuts, metric)
        nested = [[s for s in sites if s.kind == "embed" or s.layer <= c] for c in cuts]
        separate = patcher.patch(nested, metric)
        assert ours.names == separate.names
        assert (ours.values - separate.values).abs().max().item() <= 1e-6, name
        assert ours.detail is not None and separate.detail is not None
        assert (ours.detail - separate.detail).abs().max().item() <= 1e-6, name
    assert (ours.values - ours.clean).abs().max() > 1e-3


def test_grids_equal_transformer_lens_patching(case):
    name, model, tokens = case
    layers = list(range(N_LAYERS))
    patcher = Patcher(model, tokens, "shift", max_rows=12)
    source = ActivationCache(patcher.cf, model)
    n_heads, n_pos = model.cfg.n_heads, tokens.shape[1]
    metric = tl_sink_metric(model, layers)
    try:
        theirs_heads = tlp.get_act_patch_attn_head_out_all_pos(model, tokens, source, metric)
        theirs_resid = tlp.get_act_patch_resid_pre(model, tokens, source, metric)
    finally:
        model.reset_hooks(including_permanent=True)
    heads = patcher.patch(
        [Site("head", la, head=h, positions=None) for la in layers for h in range(n_heads)],
        SinkScore(layers),
    )
    resid = patcher.patch(
        [Site("resid_pre", la, positions=(p,)) for la in layers for p in range(n_pos)],
        SinkScore(layers),
    )
    assert (heads.values.view(N_LAYERS, n_heads) - theirs_heads).abs().max() <= TOL, name
    assert (resid.values.view(N_LAYERS, n_pos) - theirs_resid).abs().max() <= TOL, name


def _naive_path(model, tokens, patcher, sender, receiver, layers) -> float:
    """IOI path patching by hand: (1) the sender at its counterfactual, every head's z and every
    MLP output frozen clean, caching the receiver's input; (2) only that input patched."""
    clean, cf = patcher.clean, patcher.cf
    hooks = []
    for la in range(model.cfg.n_layers):
        z = get_act_name("z", la)

        def freeze_z(act, hook, name=z):
            act[:] = clean[name]
            if sender.kind == "head" and hook.layer() == sender.layer:
                act[:, 0, sender.head] = cf[name][:, 0, sender.head]
            if sender.kind == "attn" and hook.layer() == sender.layer:
                act[:, 0] = cf[name][:, 0]
            return act

        hooks.append((z, freeze_z))
        if not model.cfg.attn_only:
            mlp = get_act_name("mlp_out", la)

            def freeze_mlp(act, hook, name=mlp):
                act[:] = clean[name]
                if sender.kind == "mlp" and hook.layer() == sender.layer:
                    act[:, 0] = cf[name][:, 0]
                return act

            hooks.append((mlp, freeze_mlp))
    if sender.kind == "embed":
        hooks.append(_setter(sender, cf))
    split, mlp_in = model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in
    model.set_use_split_qkv_input(True)
    if not model.cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    try:
        with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == receiver.hook_name)
        new = cache[receiver.hook_name]

        def put(act, hook):
            if receiver.heads is None:
                act[:] = new
            else:
                act[:, :, list(receiver.heads)] = new[:, :, list(receiver.heads)]
            return act

        return _naive_sink(model, tokens, [(receiver.hook_name, put)], layers)
    finally:
        model.set_use_split_qkv_input(split)
        if not model.cfg.attn_only:
            model.set_use_hook_mlp_in(mlp_in)


def test_path_patching_equals_the_naive_ioi_computation(case):
    name, model, tokens = case
    cfg = model.cfg
    patcher = Patcher(model, tokens, "shift")
    kv = (cfg.n_key_value_heads or cfg.n_heads) - 1  # the last KV head
    paths = [
        (Site("head", 0, head=1), Receiver("k", 1)),
        (Site("embed"), Receiver("v", 1)),
        (Site("attn", 0), Receiver("q", 2, heads=(0, 2))),
        (Site("head", 1, head=3), Receiver("k", 2, heads=(kv,))),
    ]
    if not cfg.attn_only:
        paths += [
            (Site("mlp", 0), Receiver("mlp_in", 1)),
            (Site("head", 0, head=2), Receiver("mlp_in", 1)),
        ]
        if not cfg.parallel_attn_mlp:
            paths.append(
                (Site("head", 1, head=0), Receiver("mlp_in", 1))
            )  # attention -> its own MLP
    layers = [1, 2]
    ours = patcher.path_patch(paths, SinkScore(layers))
    for (sender, receiver), value in zip(paths, ours.values.tolist(), strict=True):
        expected = _naive_path(model, tokens, patcher, sender, receiver, layers)
        assert abs(value - expected) <= TOL, f"{name}: {sender.name}->{receiver.name}"
    assert (ours.values - ours.clean).abs().max() > 1e-4
    if cfg.parallel_attn_mlp:  # attention and MLP of one parallel block read the same input
        with pytest.raises(UsageError, match="parallel block"):
            patcher.path_patch([(Site("head", 1, head=0), Receiver("mlp_in", 1))])


def test_attribution_is_the_limit_of_exact_patching(case):
    name, model, tokens = case
    patcher = Patcher(model, tokens, "shift")
    sites = [Site("embed"), Site("attn", 0), Site("head", 1, head=2)]
    if not model.cfg.attn_only:
        sites.append(Site("mlp", 0))
    metric = SinkScore([1, 2])
    attr = attribution_patch(patcher, sites, metric)
    eps = 1e-3
    for hook in {s.hook_name for s in sites}:
        patcher.cf[hook] = patcher.clean[hook] + eps * (patcher.cf[hook] - patcher.clean[hook])
    exact = patcher.patch(sites, metric)
    assert attr.clean == pytest.approx(exact.clean, abs=1e-6)
    limit = exact.effects / eps
    assert (attr.effects - limit).abs().max() <= 1e-2 * max(1.0, limit.abs().max().item()), name
