"""Questions as data: counterfactuals and readouts the engine was not written for, each checked
against an independent computation (a plain hook loop on the model, TransformerLens' own
``patching`` module, a hand-written path patch)."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
import transformer_lens.patching as tlp
from transformer_lens.utilities import get_act_name

from circuits.core.conventions import parse_counterfactual_spec
from circuits.core.errors import UsageError
from circuits.patching import (
    AttentionToP0,
    CachedActivations,
    CacheReadout,
    FirstToken,
    KLToClean,
    LogitDifference,
    LossAndKL,
    NextTokenLoss,
    P0Norm,
    Patcher,
    PromptSet,
    Receiver,
    SinkScore,
    Site,
    component_sites,
)
from circuits.patching.attribution import attribution_patch
from circuits.patching.stream import p0_stream_estimate
from circuits.zoo import tiny_model

N_LAYERS = 3


@pytest.fixture(scope="module")
def model():
    model = tiny_model(seed=3, n_layers=N_LAYERS, n_key_value_heads=2)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():  # norm weights away from their init of 1: the readouts must apply them
        for name, p in model.named_parameters():
            if "ln" in name:
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen))
    assert model.ln_final.w.std() > 0.1
    return model


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(1, 200, (4, 10), generator=torch.Generator().manual_seed(5))


def _plain(model, tokens, hooks, read):
    """The model run with ``hooks``; ``read(logits, cache)`` on the result (no engine)."""
    store = {}

    def keep(act, hook):
        store[hook.name] = act.detach().clone()

    names = [get_act_name(a, la) for la in range(N_LAYERS) for a in ("resid_post", "pattern")]
    names.append("ln_final.hook_scale")
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks + [(n, keep) for n in names])
    return read(logits, store)


def _setter(name, value, pos=0, head=None):
    def hook(act, hook):
        if head is None:
            act[:, pos] = value[:, pos]
        else:
            act[:, pos, head] = value[:, pos, head]
        return act

    return (name, hook)


def _loss(logits, tokens):
    logp = logits.log_softmax(-1)[:, :-1]
    return float(-logp.gather(-1, tokens[:, 1:, None]).mean())


# -- the id-reuse regression (a wrong clean value was possible) ---------------------------------


def test_clean_values_never_come_from_another_readout(model, tokens):
    """``clean_value`` cached non-sink values under ``id(metric)``; a freed readout's id is
    reused by CPython, and the next readout was handed the old clean value."""
    patcher = Patcher(model, tokens, "zero")
    for layer in [0, 1, 2, 0, 2, 1]:
        res = patcher.patch([Site("embed")], P0Norm(layer))  # freed after the call
        gc.collect()
        want = _plain(
            model,
            tokens,
            [],
            lambda lg, s, la=layer: float(
                s[f"blocks.{la}.hook_resid_post"][:, 0].norm(dim=-1).mean()
            ),
        )
        assert res.clean == pytest.approx(want, rel=1e-5)
    for layer in [1, 2, 1]:  # bare callables: a fresh CacheReadout each call
        name = get_act_name("resid_post", layer)
        res = patcher.patch([Site("embed")], lambda cache, n=name: cache[n].norm())
        want = _plain(model, tokens, [], lambda lg, s, n=name: float(s[n].norm()))
        assert res.clean == pytest.approx(want, rel=1e-5)


def test_a_new_readout_cannot_receive_another_readouts_clean_value(model, tokens):
    """The clean-value cache is keyed by what a readout asks (its class and public attributes),
    derived by the engine: a user's readout adds a parameter and declares nothing else, and each
    instance still gets its own clean value. Under the old hand-written ``reduction_key`` (the
    sink score's name, inherited by a subclass) the second power below received the first's
    clean reductions."""

    class SinkPower(SinkScore):
        """The receivers' per-head sink score raised to ``power``, averaged (a new question)."""

        def __init__(self, receivers, power):
            super().__init__(receivers)
            self.power = power

        def reduce(self, name, acts):
            return super().reduce(name, acts) ** self.power

    def plain(power, layers):
        def read(logits, store):
            per_layer = [
                float(
                    store[get_act_name("pattern", la)][:, :, :, 0]
                    .mean(dim=(0, 2))
                    .pow(power)
                    .mean()
                )
                for la in layers
            ]
            return sum(per_layer) / len(per_layer)

        return _plain(model, tokens, [], read)

    patcher = Patcher(model, tokens, "zero")
    for power, layers in [(1, [1, 2]), (2, [1, 2]), (3, [1, 2]), (2, [2]), (1, [1, 2])]:
        clean, _ = patcher.clean_value(SinkPower(layers, power))
        assert clean == pytest.approx(plain(power, layers), rel=1e-5)
        assert patcher.clean_value(SinkScore(layers))[0] == pytest.approx(
            plain(1, layers), rel=1e-5
        )
    # two cache callables on one hook, each a new object: each its own clean value
    name = get_act_name("resid_post", 1)
    for scale in (1.0, 3.0, 1.0):
        got, _ = patcher.clean_value(
            CacheReadout(lambda c, k=scale: k * c[name].norm(), hooks=[name])
        )
        assert got == pytest.approx(
            scale * _plain(model, tokens, [], lambda lg, s: float(s[name].norm())), rel=1e-5
        )


# -- counterfactuals as data ---------------------------------------------------------------------


def test_first_token_counterfactual_equals_a_plain_hook_loop(model, tokens):
    token = 17
    cf_tokens = tokens.clone()
    cf_tokens[:, 0] = token
    _, cf_cache = model.run_with_cache(cf_tokens)
    patcher = Patcher(model, tokens, f"token:{token}")
    sites = [Site("embed"), Site("attn", 0), Site("mlp", 0), Site("head", 1, head=2)]
    res = patcher.patch(sites, SinkScore([2]))
    for site, value in zip(sites, res.values, strict=True):
        hook = _setter(site.hook_name, cf_cache[site.hook_name], head=site.head)
        want = _plain(
            model,
            tokens,
            [hook],
            lambda lg, s: float(s["blocks.2.attn.hook_pattern"][:, :, :, 0].mean()),
        )
        assert float(value) == pytest.approx(want, abs=1e-5)
    assert res.to_dict()["counterfactual"] == f"token:{token}"
    assert "position 0 holding token 17" in res.to_dict()["counterfactual_definition"]


def test_bos_is_resolved_by_the_tokenizer_or_refused_with_the_fix(model, tokens):
    assert model.tokenizer is None
    with pytest.raises(UsageError, match="no tokenizer.*by its id"):
        Patcher(model, tokens, "token:<bos>")


@pytest.mark.parametrize(
    ("spec", "match"),
    [("token:", "names no token"), ("shift:abc", "token id"), ("swap", "unknown counterfactual")],
)
def test_bad_counterfactual_specs_are_refused_without_a_model(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_counterfactual_spec(spec)


def test_cached_activations_and_prompt_sets_are_checked(model, tokens):
    with pytest.raises(UsageError, match="same length"):
        Patcher(model, tokens, PromptSet(tokens[:, :5]))
    with pytest.raises(UsageError, match="no values for hook"):
        Patcher(model, tokens, CachedActivations({"hook_embed": torch.zeros(*tokens.shape, 32)}))
    with pytest.raises(UsageError, match=r"CachedActivations\(values=.*at least 1 item"):
        CachedActivations({})


# -- readouts on the output ------------------------------------------------------------------------


@pytest.mark.parametrize("one_prompt_per_piece", [False, True])
def test_loss_kl_and_logit_difference_equal_a_plain_hook_loop(
    model, tokens, monkeypatch, one_prompt_per_piece
):
    """Chosen first token as the counterfactual; the output readouts with the prefix shortcut
    on (an MLP / head at P0) and off (the embedding, a resid_pre) equal the patched model's
    logits read by hand, whether the loss and KL unembed every prompt at once or one prompt at a
    time (``logit_chunks``, as a 262k-token vocabulary does)."""
    if one_prompt_per_piece:
        monkeypatch.setattr("circuits.patching.plan.LOGIT_CHUNK_VALUES", 1)
    patcher = Patcher(model, tokens, FirstToken(5))
    cf_tokens = tokens.clone()
    cf_tokens[:, 0] = 5
    _, cf_cache = model.run_with_cache(cf_tokens)
    with torch.no_grad():
        clean_logits = model(tokens)
    sites = [Site("embed"), Site("mlp", 0), Site("head", 1, head=0), Site("resid_pre", 2)]
    correct, wrong = [3, 4, 5, 6], 9

    def kl(lg, rows=slice(None)):
        ref = clean_logits[:, rows].log_softmax(-1)
        terms = F.kl_div(lg[:, rows].log_softmax(-1), ref, log_target=True, reduction="none")
        return float(terms.sum(-1).mean())

    readouts = {
        "loss": (NextTokenLoss(), lambda lg: _loss(lg, tokens)),
        "kl": (KLToClean(), kl),
        "kl at 2 positions": (KLToClean(positions=[1, -1]), lambda lg: kl(lg, [1, -1])),
        "loss and kl": (LossAndKL(), lambda lg: _loss(lg, tokens)),
        "ld": (
            LogitDifference(correct, wrong),
            lambda lg: float((lg[range(4), -1, correct] - lg[:, -1, wrong]).mean()),
        ),
    }
    for name, (readout, by_hand) in readouts.items():
        res = patcher.patch(sites, readout)
        assert res.clean == pytest.approx(by_hand(clean_logits), abs=1e-5), name
        for site, value in zip(sites, res.values, strict=True):
            hook = _setter(site.hook_name, cf_cache[site.hook_name], head=site.head)
            want = _plain(model, tokens, [hook], lambda lg, s, f=by_hand: f(lg))
            assert float(value) == pytest.approx(want, abs=2e-5), (name, site.name)
    both = patcher.patch(sites, LossAndKL())  # the detail: (loss, KL) from one unembedding
    assert both.detail is not None
    for site, row in zip(sites, both.detail, strict=True):
        hook = _setter(site.hook_name, cf_cache[site.hook_name], head=site.head)
        want = _plain(model, tokens, [hook], lambda lg, s: (_loss(lg, tokens), kl(lg)))
        assert row.tolist() == pytest.approx(want, abs=2e-5), site.name


def test_a_readout_of_the_patched_block_keeps_the_whole_block_run(model, tokens):
    """P0's norm after block 1 with mlp1@p0 patched: the prefix shortcut would skip block 1's
    output, so the engine must run the block (``prefix_exact``)."""
    patcher = Patcher(model, tokens, "zero")
    res = patcher.patch([Site("mlp", 1), Site("attn", 1)], P0Norm(1))
    for site, value in zip([Site("mlp", 1), Site("attn", 1)], res.values, strict=True):
        zero = torch.zeros_like(patcher.clean[site.hook_name])
        want = _plain(
            model,
            tokens,
            [_setter(site.hook_name, zero)],
            lambda lg, s: float(s["blocks.1.hook_resid_post"][:, 0].norm(dim=-1).mean()),
        )
        assert float(value) == pytest.approx(want, rel=1e-5)


def test_a_named_hook_readout_reads_ln_final_patched(model, tokens):
    patcher = Patcher(model, tokens, "zero")
    readout = CacheReadout(
        lambda c: c["ln_final.hook_scale"][:, 0].mean(), hooks=["ln_final.hook_scale"]
    )
    res = patcher.patch([Site("mlp", 2)], readout)
    zero = torch.zeros_like(patcher.clean["blocks.2.hook_mlp_out"])
    want = _plain(
        model,
        tokens,
        [_setter("blocks.2.hook_mlp_out", zero)],
        lambda lg, s: float(s["ln_final.hook_scale"][:, 0].mean()),
    )
    assert float(res.values[0]) == pytest.approx(want, rel=1e-5)
    assert res.clean != pytest.approx(want, rel=1e-3)  # the patch moved it
    with pytest.raises(UsageError, match="does not capture"):
        patcher.patch(
            [Site("mlp", 2)],
            CacheReadout(
                lambda c: c["blocks.1.hook_resid_post"].sum(), hooks=["ln_final.hook_scale"]
            ),
        )


def test_attention_to_p0_readout_equals_a_plain_hook_loop(model, tokens):
    patcher = Patcher(model, tokens, "mean")
    res = patcher.patch([Site("mlp", 0)], AttentionToP0([1, 2]))
    mean = patcher.cf["blocks.0.hook_mlp_out"]
    want = _plain(
        model,
        tokens,
        [_setter("blocks.0.hook_mlp_out", mean)],
        lambda lg, s: float(
            torch.stack(
                [s[f"blocks.{la}.attn.hook_pattern"][:, :, 1:, 0].mean() for la in (1, 2)]
            ).mean()
        ),
    )
    assert float(res.values[0]) == pytest.approx(want, abs=1e-6)


def test_readouts_without_layers_read_discovers_receivers_whatever_is_patched(model, tokens):
    """``SinkScore()`` once read the layers after the last patch, so its clean value changed
    from call to call; now it reads layer 2 .. last, as ``discover`` does."""
    patcher = Patcher(model, tokens, "zero")
    want_clean = _plain(
        model,
        tokens,
        [],
        lambda lg, s: float(
            torch.stack(
                [s[f"blocks.{la}.attn.hook_pattern"][..., 0].mean() for la in range(2, N_LAYERS)]
            ).mean()
        ),
    )
    for site in [Site("embed"), Site("mlp", 0), Site("attn", 1)]:
        res = patcher.patch([site], SinkScore())
        assert res.clean == pytest.approx(want_clean, abs=1e-6)
        zero = torch.zeros_like(patcher.cf[site.hook_name])
        want = _plain(
            model,
            tokens,
            [_setter(site.hook_name, zero)],
            lambda lg, s: float(s["blocks.2.attn.hook_pattern"][..., 0].mean()),
        )
        assert float(res.values[0]) == pytest.approx(want, abs=1e-6)
    assert patcher.patch([Site("embed")], AttentionToP0()).to_dict()["metric"][
        "receiver_layers"
    ] == [2]


def test_estimates_refuse_readouts_they_cannot_compute(model, tokens):
    patcher = Patcher(model, tokens, "shift")
    for estimate in (p0_stream_estimate, attribution_patch):
        with pytest.raises(UsageError, match="sink score only.*Patcher.patch"):
            estimate(patcher, component_sites(N_LAYERS, positions=(0,)), NextTokenLoss())


# -- IOI-style: corrupted prompts, logit difference ---------------------------------------------


def test_ioi_style_experiment_equals_transformer_lens_and_a_hand_written_path_patch(model):
    """Clean prompts ``A B ... A`` vs corrupted ``C B ... C``, read by the logit difference of
    B over A at the last position: activation patching of every resid_pre position equals
    TransformerLens' ``get_act_patch_resid_pre``; a path patch sender head -> a later layer's
    query input equals a hand-written two-run path patch."""
    gen = torch.Generator().manual_seed(11)
    clean = torch.randint(20, 200, (6, 8), generator=gen)
    clean[:, -1] = clean[:, 0]
    corrupt = clean.clone()
    corrupt[:, 0] = corrupt[:, -1] = torch.randint(200, 250, (6,), generator=gen)
    io, s = clean[:, 1].tolist(), clean[:, 0].tolist()
    readout = LogitDifference(io, s)
    patcher = Patcher(model, clean, PromptSet(corrupt, name="ioi-corrupted"))
    _, corrupt_cache = model.run_with_cache(corrupt)

    def tl_metric(logits):
        return (logits[range(6), -1, io] - logits[range(6), -1, s]).mean()

    theirs = tlp.get_act_patch_resid_pre(model, clean, corrupt_cache, tl_metric)  # [layer, pos]
    sites = [Site("resid_pre", la, positions=(p,)) for la in range(N_LAYERS) for p in range(8)]
    ours = patcher.patch(sites, readout).values.reshape(N_LAYERS, 8)
    assert (ours - theirs).abs().max() < 1e-4

    # path: head 0.1's output (at every position) -> layer 2's query input, everything else clean
    sender, receiver = Site("head", 0, head=1, positions=None), Receiver("q", 2)
    got = float(patcher.path_patch([(sender, receiver)], readout).values[0])
    want = _hand_path_patch(model, clean, corrupt_cache, tl_metric)
    assert got == pytest.approx(want, abs=1e-4)


def _hand_path_patch(model, clean, corrupt_cache, metric):
    """Run 1: clean run with head 0.1's z from the corrupted run and every other head and MLP
    frozen clean (so only its direct path changes); record layer 2's residual input. Run 2: the
    clean run with layer 2's query input taken from run 1."""
    _, clean_cache = model.run_with_cache(clean)
    frozen = []
    for la in range(N_LAYERS):
        for act in ("z", "mlp_out"):
            name = get_act_name(act, la)

            def freeze(a, hook, name=name):
                out = clean_cache[name].clone()
                if name == "blocks.0.attn.hook_z":
                    out[:, :, 1] = corrupt_cache[name][:, :, 1]
                return out

            frozen.append((name, freeze))
    store = {}

    def keep(act, hook):
        store["resid"] = act.clone()

    model.cfg.use_split_qkv_input = True
    try:
        with torch.no_grad():
            model.run_with_hooks(clean, fwd_hooks=frozen + [("blocks.2.hook_resid_pre", keep)])

            def q_in(act, hook):
                normed = store["resid"]
                return normed[:, :, None, :].expand_as(act).clone()

            # the query input is resid_pre before ln1: TL's hook_q_input is that residual
            logits = model.run_with_hooks(clean, fwd_hooks=[("blocks.2.hook_q_input", q_in)])
    finally:
        model.cfg.use_split_qkv_input = False
    return float(metric(logits))


def test_every_hook_a_cache_readout_can_name_reflects_the_patch(model, tokens):
    """Each hook kind a readout may read (every block hook, the embedding hooks, ln_final), with
    mlp1@p0 zeroed, equals a plain hook loop; logits are refused with the fix; a cached tensor
    can be passed to the model's own modules (model.unembed)."""
    patcher = Patcher(model, tokens, "zero")
    name_mlp = "blocks.1.hook_mlp_out"
    zero = torch.zeros_like(patcher.clean[name_mlp])
    store = {}

    def keep(act, hook):
        store[hook.name] = act.detach().clone()

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[_setter(name_mlp, zero), (lambda n: True, keep)])
    names = sorted(store)
    kinds = {n.split(".")[-1] for n in names}
    assert {"hook_pattern", "hook_resid_post", "hook_normalized", "hook_scale", "hook_z"} <= kinds
    assert any(n.startswith("ln_final") for n in names) and "hook_embed" in names
    assert "unembed.hook_in" in names  # TransformerLens' unembedding hook: refused by name
    with pytest.raises(UsageError, match="never runs the unembedding.*output readout"):
        patcher.patch([Site("mlp", 1)], CacheReadout(lambda c: 0.0, hooks=["unembed.hook_in"]))
    names = [n for n in names if not n.startswith("unembed.")]
    for name in names:
        res = patcher.patch([Site("mlp", 1)], CacheReadout(lambda c, n=name: c[n].double().sum()))
        assert float(res.values[0]) == pytest.approx(
            float(store[name].double().sum()), rel=1e-5, abs=1e-5
        ), name
    with pytest.raises(UsageError, match="logits are not a hook.*output readout"):
        patcher.patch([Site("mlp", 1)], CacheReadout(lambda c: c["logits"].sum()))
    res = patcher.patch(
        [Site("mlp", 1)],
        CacheReadout(
            lambda c: model.unembed(c["ln_final.hook_normalized"] * model.ln_final.w).sum(),
            hooks=["ln_final.hook_normalized"],
        ),
    )
    assert float(res.values[0]) == pytest.approx(
        float(model.unembed(store["ln_final.hook_normalized"] * model.ln_final.w).sum()), rel=1e-4
    )


def test_every_command_line_counterfactual_kind_is_one_registered_class():
    """The command line's spec kinds (torch-free, for --help) and the classes that build them
    (``Counterfactual.registry``, filled by each class's ``kind``) are the same set: the
    resolver looks a kind up, it keeps no list of its own."""
    from circuits.core.conventions import COUNTERFACTUAL_SPECS
    from circuits.patching.counterfactuals import Counterfactual

    kinds = {spec.split(":")[0] for spec in COUNTERFACTUAL_SPECS}
    assert kinds == set(Counterfactual.registry)
    for kind, cls in Counterfactual.registry.items():
        assert cls.kind == kind and issubclass(cls, Counterfactual)
