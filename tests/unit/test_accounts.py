"""The competing accounts' interventions and readouts against independent computations.

* ``MassiveDims``: a patch that replaces only named residual coordinates with the shifted run's
  equals a plain hook loop doing exactly that; at a non-residual hook it changes nothing.
* ``SinkKeySplit``: on the clean run, the norm part plus the direction part is the attention to
  P0 above a typical key, recomputed here by hand from the model's own weights (queries and keys
  from ``W_Q`` / ``W_K`` and the layer's input, rotary applied with TransformerLens' rotation,
  the softmax evaluated with P0's key rescaled); patched values equal that computation on the
  patched run's activations.
* ``P0ValueNorm``: P0's value norm over the other positions' equals ``W_V`` applied by hand.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens.utilities import get_act_name

from circuits.core.conventions import parse_counterfactual_spec
from circuits.core.errors import UsageError
from circuits.patching import MassiveDims, Patcher, SinkScore, Site
from circuits.patching.counterfactuals import shifted_tokens
from circuits.patching.key_value_readouts import P0ValueNorm, SinkKeySplit
from circuits.zoo import tiny_model

N_LAYERS = 3


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3, n_layers=N_LAYERS, n_key_value_heads=2)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(1, 200, (4, 10), generator=torch.Generator().manual_seed(5))


def _sink(model, tokens, hooks, layer=2):
    store = {}

    def keep(act, hook):
        store["p"] = act.detach().clone()

    name = get_act_name("pattern", layer)
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks + [(name, keep)])
    return float(store["p"][:, :, :, 0].mean())


@pytest.mark.parametrize("kind,layer", [("resid_pre", 1), ("attn", 0), ("mlp", 1)])
def test_massive_dims_patch_only_the_named_coordinates(model, tokens, kind, layer):
    dims = [3, 17, 30]
    site = Site(kind, layer)
    _, shifted = model.run_with_cache(shifted_tokens(tokens))

    def only_dims(act, hook):
        act[:, 0, dims] = shifted[hook.name][:, 1, dims]
        return act

    want = _sink(model, tokens, [(site.hook_name, only_dims)])
    got = Patcher(model, tokens, MassiveDims(dims)).patch([site], SinkScore([2]))
    assert float(got.values[0]) == pytest.approx(want, abs=1e-5)
    whole = Patcher(model, tokens, "shift").patch([site], SinkScore([2]))
    assert float(got.values[0]) != pytest.approx(float(whole.values[0]), abs=1e-6)


def test_massive_dims_leave_a_head_clean_and_are_named_in_outputs(model, tokens):
    patcher = Patcher(model, tokens, "dims:3,17@mean")
    res = patcher.patch([Site("head", 1, head=2)], SinkScore([2]))
    clean, _ = patcher.clean_value(SinkScore([2]))
    assert float(res.values[0]) == pytest.approx(clean, abs=1e-6)
    described = res.to_dict()
    assert described["counterfactual"] == "dims:3,17@mean"
    assert "coordinates 3,17" in described["counterfactual_definition"]


@pytest.mark.parametrize(
    "spec,match",
    [("dims:", "residual coordinates"), ("dims:a,b", "residual coordinates"),
     ("dims:3@swap", "shift, mean or zero")],
)  # fmt: skip
def test_bad_dims_specs_are_refused_in_one_line(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_counterfactual_spec(spec)


def test_a_dimension_outside_the_residual_is_refused(model, tokens):
    with pytest.raises(UsageError, match="outside the residual stream"):
        Patcher(model, tokens, MassiveDims([model.cfg.d_model])).patch(
            [Site("resid_pre", 1)], SinkScore([2])
        )


def _by_hand(model, tokens, layer, hooks=()):
    """(norm part, direction part, attention to P0 above a typical key) of ``layer``, from the
    layer's normalised input and its weights, rotary applied by TransformerLens' rotation."""
    store = {}

    def keep(act, hook):
        store[hook.name] = act.detach().clone()

    attn = model.blocks[layer].attn
    name = f"blocks.{layer}.ln1.hook_normalized"
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=list(hooks) + [(name, keep)])
        x = store[name]
        q = torch.einsum("bpm,hmd->bphd", x, attn.W_Q) + attn.b_Q
        k = torch.einsum("bpm,hmd->bphd", x, attn._W_K) + attn._b_K
        q, k = attn.apply_rotary(q), attn.apply_rotary(k)
        k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
        scale = attn.attn_scale
        n = tokens.shape[1]
        norm_part, dir_part = [], []
        for b in range(tokens.shape[0]):
            for h in range(q.shape[2]):
                k0 = k[b, 0, h]
                mean_norm = k[b, 1:, h].norm(dim=-1).mean()
                for t in range(1, n):
                    s = (k[b, : t + 1, h] @ q[b, t, h]) / scale
                    matched = s.clone()
                    matched[0] = (k0 * mean_norm / k0.norm()) @ q[b, t, h] / scale
                    typical = s.clone()
                    typical[0] = s[1:].mean()
                    a, am, at = (v.softmax(-1)[0] for v in (s, matched, typical))
                    norm_part.append(a - am)
                    dir_part.append(am - at)
    return float(torch.stack(norm_part).mean()), float(torch.stack(dir_part).mean())


def test_key_split_equals_a_hand_computation_clean_and_patched(model, tokens):
    patcher = Patcher(model, tokens, "shift")
    norm_want, dir_want = _by_hand(model, tokens, 2)
    norm, _ = patcher.clean_value(SinkKeySplit([2], part="norm"))
    direction, _ = patcher.clean_value(SinkKeySplit([2], part="direction"))
    assert norm == pytest.approx(norm_want, abs=1e-5)
    assert direction == pytest.approx(dir_want, abs=1e-5)

    _, shifted = model.run_with_cache(shifted_tokens(tokens))
    site = Site("attn", 0)

    def patch(act, hook):
        act[:, 0] = shifted[hook.name][:, 1]
        return act

    norm_p, dir_p = _by_hand(model, tokens, 2, [(site.hook_name, patch)])
    got = patcher.patch([site], SinkKeySplit([2], part="norm"))
    assert float(got.values[0]) == pytest.approx(norm_p, abs=1e-5)
    got = patcher.patch([site], SinkKeySplit([2], part="direction"))
    assert float(got.values[0]) == pytest.approx(dir_p, abs=1e-5)


def test_value_norm_equals_w_v_applied_by_hand(model, tokens):
    layer = 1
    store = {}

    def keep(act, hook):
        store["x"] = act.detach().clone()

    attn = model.blocks[layer].attn
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.ln1.hook_normalized", keep)])
        v = torch.einsum("bpm,hmd->bphd", store["x"], attn._W_V) + attn._b_V
    norms = v.norm(dim=-1)
    want = (norms[:, 0] / norms[:, 1:].mean(dim=1)).mean(dim=0).mean()
    got, detail = Patcher(model, tokens, "shift").clean_value(P0ValueNorm([layer]))
    assert got == pytest.approx(float(want), rel=1e-5)
    assert detail is not None and detail.shape == (1,)


# -- first-ness without position 0, position without first-ness ---------------------------------

from circuits.patching.positions import (  # noqa: E402
    DocumentMask,
    Reposition,
    SinkScoreAt,
    applied,
)

START = 4


@pytest.fixture(scope="module", params=["rotary", "standard"])
def any_positions(request):
    return tiny_model(seed=7, n_layers=N_LAYERS, positional_embedding_type=request.param)


def _final(model, tokens, hooks):
    store = {}
    name = get_act_name("resid_post", N_LAYERS - 1)

    def keep(act, hook):
        store["r"] = act.detach().clone()

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=list(hooks) + [(name, keep)])
    return store["r"]


def _segment_alone(model, tokens, start):
    """The segment ``tokens[:, start:]`` run by itself at positions ``start..`` (rotary: q/k
    rotated with the offset; learned: rows ``start..`` of the position table)."""
    seg = tokens[:, start:]
    hooks = []
    if model.cfg.positional_embedding_type == "rotary":
        for la in range(N_LAYERS):
            attn = model.blocks[la].attn
            raw = {}
            for key in ("q", "k"):

                def keep(act, hook, key=key, raw=raw):
                    raw[key] = act.clone()

                def rotate(act, hook, key=key, raw=raw, attn=attn):
                    return attn.apply_rotary(raw[key], past_kv_pos_offset=start)

                hooks += [(get_act_name(key, la), keep), (get_act_name(f"rot_{key}", la), rotate)]
    else:
        table = model.pos_embed.W_pos

        def rows(act, hook):
            return table[start : start + act.shape[1]].expand_as(act).clone()

        hooks.append(("hook_pos_embed", rows))
    return _final(model, seg, hooks)


def test_a_document_masks_segment_equals_the_segment_run_alone(any_positions, tokens):
    model = any_positions
    with applied(model, DocumentMask(START), n_tokens=tokens.shape[1]):
        masked = _final(model, tokens, [])
    alone = _segment_alone(model, tokens, START)
    torch.testing.assert_close(masked[:, START:], alone, atol=1e-5, rtol=1e-4)
    plain = _final(model, tokens, [])
    torch.testing.assert_close(masked[:, :START], plain[:, :START], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(masked[:, START:], plain[:, START:], atol=1e-3)


def _rotate_by_hand(x, pos, base, dim):
    """GPT-NeoX rotary of ``x`` [..., d] as at integer ``pos``: pairs (i, i + dim/2)."""
    half = dim // 2
    freq = base ** (-torch.arange(half, dtype=torch.float64) * 2 / dim)
    angle = pos * freq
    cos, sin = torch.cos(angle).float(), torch.sin(angle).float()
    x1, x2, rest = x[..., :half], x[..., half:dim], x[..., dim:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def test_a_repositioned_first_token_equals_a_hand_rotated_run(tokens):
    model = tiny_model(seed=7, n_layers=N_LAYERS)
    assert not model.cfg.rotary_adjacent_pairs
    moves = {0: 6, 3: 0}
    positions = [moves.get(p, p) for p in range(tokens.shape[1])]
    store = {}

    def keep(act, hook):
        store[hook.name] = act.detach().clone()

    with applied(model, Reposition(moves), n_tokens=tokens.shape[1]):
        with torch.no_grad():
            model.run_with_hooks(
                tokens,
                fwd_hooks=[
                    ("blocks.0.ln1.hook_normalized", keep),
                    ("blocks.0.attn.hook_attn_scores", keep),
                ],
            )
    attn, cfg = model.blocks[0].attn, model.cfg
    x = store["blocks.0.ln1.hook_normalized"]
    q = torch.einsum("bpm,hmd->bphd", x, attn.W_Q) + attn.b_Q
    k = torch.einsum("bpm,hmd->bphd", x, attn.W_K) + attn.b_K
    rot = torch.stack([torch.stack([_rotate_by_hand(t[:, p], positions[p], cfg.rotary_base, cfg.rotary_dim)
                                    for p in range(tokens.shape[1])], dim=1) for t in (q, k)])  # fmt: skip
    kr = rot[1].repeat_interleave(q.shape[2] // k.shape[2], dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", rot[0], kr) / attn.attn_scale
    got = store["blocks.0.attn.hook_attn_scores"]
    causal = torch.isfinite(got)
    torch.testing.assert_close(got[causal], scores[causal], atol=1e-5, rtol=1e-4)


def test_a_repositioned_learned_position_equals_the_residual_built_by_hand(tokens):
    model = tiny_model(seed=7, n_layers=N_LAYERS, positional_embedding_type="standard")
    moves = {0: 6}
    rows = torch.tensor([moves.get(p, p) for p in range(tokens.shape[1])])
    with torch.no_grad():
        resid = model.embed.W_E[tokens] + model.pos_embed.W_pos[rows]
        want = model(resid, start_at_layer=0)
        with applied(model, Reposition(moves), n_tokens=tokens.shape[1]):
            got = model(tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_patching_under_a_document_mask_equals_a_plain_hook_loop(tokens):
    model = tiny_model(seed=7, n_layers=N_LAYERS)
    n = tokens.shape[1]
    unmasked = model.run_with_cache(tokens)[1]
    mask_hooks = DocumentMask(START).hooks(model, n)
    site = Site("mlp", 0, positions=(START,))

    def not_first(act, hook):
        act[:, START] = unmasked[hook.name][:, START]
        return act

    store = {}

    def keep(act, hook):
        store["p"] = act.detach().clone()

    with torch.no_grad():
        model.run_with_hooks(
            tokens,
            fwd_hooks=mask_hooks
            + [(site.hook_name, not_first), ("blocks.2.attn.hook_pattern", keep)],
        )
    p = store["p"]
    want = float(p[:, :, START:, START].mean())
    from circuits.patching import CachedActivations
    from circuits.patching.engine import cached_hooks

    values = {h: unmasked[h] for h in cached_hooks(model) if h in unmasked.cache_dict}
    with applied(model, DocumentMask(START), n_tokens=n):
        patcher = Patcher(model, tokens, CachedActivations(values, name="unmasked"))
        got = patcher.patch([site], SinkScoreAt(START, [2]))
        clean, _ = patcher.clean_value(SinkScoreAt(START, [2]))
    assert float(got.values[0]) == pytest.approx(want, abs=1e-5)
    assert clean != pytest.approx(want, abs=1e-4)


def test_sink_score_at_zero_is_the_sink_score_and_bad_conditions_are_refused(model, tokens):
    patcher = Patcher(model, tokens, "shift")
    assert patcher.clean_value(SinkScoreAt(0, [2]))[0] == pytest.approx(
        patcher.clean_value(SinkScore([2]))[0], abs=1e-7
    )
    with pytest.raises(UsageError, match="start must be >= 1"):
        DocumentMask(0)
    with pytest.raises(UsageError, match="at least one token moved"):
        Reposition({2: 2})
    with pytest.raises(UsageError, match="needs more than"):
        DocumentMask(50).hooks(model, tokens.shape[1])


# -- the accounts command ------------------------------------------------------------------------


def test_accounts_record_matches_plain_runs_and_draws(tmp_path):
    import math
    import subprocess
    import sys

    from circuits.circuit.accounts import ask_accounts
    from circuits.metrics.attention import sink_score
    from circuits.viz.accounts_figure import accounts_figure

    model = tiny_model(seed=11, n_layers=4)
    toks = torch.randint(1, 200, (3, 12), generator=torch.Generator().manual_seed(2))
    found = ask_accounts(model, toks, model_name="tiny4", bos=False).to_json()
    _, cache = model.run_with_cache(toks)
    plain = [float(sink_score(cache["pattern", la], k).mean()) for k in (0, 6) for la in (2, 3)]
    assert found["positions"]["p0_sink"] == pytest.approx((plain[0] + plain[1]) / 2, abs=1e-6)
    assert found["positions"]["token_s_plain"] == pytest.approx((plain[2] + plain[3]) / 2, abs=1e-6)
    assert found["segment_start"] == 6 and found["receivers"] == [2, 3]
    assert set(found["segment_components"]) == {"attn0", "mlp0", "attn1", "mlp1"}
    assert all(math.isfinite(v) for v in found["key_split"]["norm"] + found["value_norm"]["ratio"])
    fig = accounts_figure(found)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("causal mask" in t for t in titles) and any("no-op" in t for t in titles)
    with pytest.raises(UsageError, match="at least 3"):
        ask_accounts(tiny_model(seed=1), toks, model_name="tiny", bos=False)

    out = tmp_path / "acc"
    proc = subprocess.run(
        [sys.executable, "-m", "circuits", "accounts", "--model", "tiny", "--n-tokens", "12"]
        + ["--segment-start", "11", "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--segment-start must be in 2..10" in proc.stderr
    assert not out.exists()


def test_the_panel_asks_the_key_and_value_readouts(model, tokens):
    from circuits.panel import explore
    from circuits.patching.key_value_readouts import SinkKeyDirection

    panel = explore(model, tokens).wait()
    panel.selected = ["mlp0@p0"]
    panel.wait()
    for label, readout in (
        ("P0 value norm", P0ValueNorm([2])),
        ("sink: P0's key-direction part", SinkKeyDirection([2])),
    ):
        panel.readout = label
        panel.wait()
        assert panel.error in ("", None)
        want = Patcher(model, tokens, "shift").patch([Site("mlp", 0)], readout)
        assert panel.result["patched"] == pytest.approx(want.detail[0].tolist(), abs=1e-6)


def test_a_patcher_holds_its_conditions_on_every_forward_and_no_other(tokens):
    """``Patcher(conditions=...)`` equals building and using one inside ``applied``; the model
    outside it is untouched; the estimates that cannot hold a condition refuse."""
    from circuits.patching.attribution import attribution_patch
    from circuits.patching.stream import EstimateUnavailable, p0_stream_estimate

    model = tiny_model(seed=7, n_layers=N_LAYERS)
    n = tokens.shape[1]
    sites = [Site("attn", 0, positions=(START,)), Site("mlp", 0, positions=(START,))]
    readout = SinkScoreAt(START, [2])
    for condition in (DocumentMask(START), Reposition({START: 0})):
        with applied(model, condition, n_tokens=n):
            inside = Patcher(model, tokens, "mean")
            want = inside.patch(sites, readout).values
            want_clean = inside.clean_value(readout)[0]
        held = Patcher(model, tokens, "mean", conditions=[condition])
        torch.testing.assert_close(held.patch(sites, readout).values, want, atol=1e-6, rtol=1e-5)
        assert held.clean_value(readout)[0] == pytest.approx(want_clean, abs=1e-7)
        plain = Patcher(model, tokens, "mean").clean_value(readout)[0]
        assert plain != pytest.approx(want_clean, abs=1e-4)  # nothing leaked onto the model
        with pytest.raises(EstimateUnavailable, match="exact patching"):
            p0_stream_estimate(held, [Site("attn", 0)], SinkScore([2]))
        with pytest.raises(UsageError, match="exact patching"):
            attribution_patch(held, [Site("attn", 0)], SinkScore([2]))


def test_the_panel_holds_its_conditions_and_says_so(tokens):
    from circuits.panel import explore

    model = tiny_model(seed=7, n_layers=N_LAYERS)
    panel = explore(model, tokens, conditions=[DocumentMask(START)], receivers=[2]).wait()
    assert "under document_mask:4" in panel.title
    panel.selected = ["mlp0@p0"]
    panel.wait()
    assert panel.error in ("", None)
    want = Patcher(model, tokens, "shift", conditions=[DocumentMask(START)]).patch(
        [Site("mlp", 0)], SinkScore([2])
    )
    assert panel.result["patched"] == pytest.approx(want.detail[0].tolist(), abs=1e-6)
    plain = Patcher(model, tokens, "shift").patch([Site("mlp", 0)], SinkScore([2]))
    assert panel.result["patched"] != pytest.approx(plain.detail[0].tolist(), abs=1e-5)
