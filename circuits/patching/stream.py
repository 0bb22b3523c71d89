"""The P0-stream estimate: each P0 patch's effect on the sink through P0's keys, computed exactly.

In a causal model position 0 attends only to itself, so P0's residual stream at every layer is a
function of the first token alone: a patch at P0 changes the P0 column exactly as a forward of
the one-token prompt with the patch applied computes it. The sink score of a receiver layer reads
``A[q, 0] = softmax_k(s[q, k])[0]``, and a P0 patch moves it along two routes:

- **P0's key** (``s[q, 0] = q_q . k_0``): the route that makes P0 a sink. Computed exactly here:
  the patched ``k_0`` of every receiver layer from the one-token run, scored against the clean
  queries (P0's own query patched), with the other keys' clean scores (and a learned sink logit, if the model has one)
  in the softmax: ``A'[q, 0] = sigmoid(s'[q, 0] - logsumexp_{k > 0} s[q, k])``.
- **P0's value**, read by every later position, which changes their residuals and so their
  queries and keys. Left out: the estimate freezes every position but P0 at its clean value.

So the estimate is the patched model with positions 1.. held clean, and it costs one forward of
one token per patch (plus one clean forward), against the exact patch's forward of the whole
prompt from the patch's layer on. Unlike attribution patching it is not linear in the patch: the
softmax is evaluated, not differentiated, so a saturated sink (where the gradient is ~0) and
components that each remove most of it (an AND, where single effects do not add up) are both
estimated as they are. ``benchmarks/bench_attribution.py`` measures its agreement with exact
patching on the zoo's models; ``tests/unit/test_stream.py`` checks it against the model run with
positions 1.. frozen and against exact patching where P0's values are read by no one.

Defined for the sink metric on causal models, for sites at position 0 only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.backend import (
    RESUMES_FROM_RESIDUAL,
    attention_scale,
    get_act_name,
    learned_attention_sinks,
)
from circuits.core.errors import UsageError
from circuits.core.model_lock import exclusive
from circuits.patching.forward import PatchEngine, prepare_sink_estimate
from circuits.patching.key_value_readouts import p0_key_scores, scored_hooks, softcap
from circuits.patching.patcher import Patcher, engine_of
from circuits.patching.readouts import Readout, SinkScore
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Site

KIND = "p0-stream estimate"


class EstimateUnavailable(UsageError):
    """The model does not expose what the estimate reads (its queries and keys as scored, the
    pre-softmax scores): e.g. a TransformerLens 4 native bridge, whose ``hook_attn_scores``
    carries the pattern. Callers fall back to exact patching."""


def _check(patcher: PatchEngine, sites: list[Site], metric: Readout | None) -> SinkScore:
    if not sites:
        raise UsageError("no sites given")
    cfg = patcher.model.cfg
    if cfg.attention_dir != "causal":
        raise UsageError(
            "the P0-stream estimate needs causal attention (P0's stream depends on P0 alone); "
            "use exact patching (Patcher.patch) on this model"
        )
    for s in sites:
        patcher.check_site(s)
        if s.positions != (0,):
            raise UsageError(
                f"site {s.name}: the P0-stream estimate patches position 0 only "
                f"(positions=(0,)), got positions={s.positions}; use Patcher.patch for others"
            )
    return prepare_sink_estimate(patcher, sites, metric, "the P0-stream estimate computes")


def _names(patcher: PatchEngine, layer: int) -> tuple[str, str]:
    return scored_hooks(patcher.model, layer)


class _Receiver:
    """What one receiver layer's clean run leaves for the estimate: its queries, P0's key, the
    score of key 0 and the log-sum-exp of every other score (with the learned sink, if any)."""

    def __init__(self) -> None:
        self.q: Float[Tensor, "batch query head d_head"] | None = None
        self.k0: Float[Tensor, "batch kv_head d_head"] | None = None
        self.s0: Float[Tensor, "batch head query"] | None = None
        self.rest: Float[Tensor, "batch head query"] | None = None
        self.raw0: Float[Tensor, "batch head query"] | None = None  # softcap(q . k_0 / scale)
        self.clean_p0: Tensor | None = None  # mean A[q, 0], clean

    def p0(
        self, s0: Float[Tensor, "... batch head query"]
    ) -> Float[Tensor, "... batch head query"]:
        """``A[q, 0]`` given key 0's scores (the other scores clean)."""
        return torch.sigmoid(s0 - self.rest)


def _check_hooks(patcher: PatchEngine, layers: Sequence[int]) -> None:
    missing = [
        name
        for la in layers
        for name in (*_names(patcher, la), get_act_name("attn_scores", la))
        if name not in patcher.model.hook_dict
    ]
    if missing:
        raise EstimateUnavailable(
            f"the P0-stream estimate reads {missing[0]}, which this model does not have: "
            "use exact patching (Patcher.patch)"
        )


def _clean_receivers(patcher: PatchEngine, layers: Sequence[int]) -> dict[int, _Receiver]:
    model = patcher.model
    _check_hooks(patcher, layers)
    recv = {layer: _Receiver() for layer in layers}

    def on_q(act: Tensor, hook, layer: int) -> None:
        recv[layer].q = act.clone()

    def on_k(act: Tensor, hook, layer: int) -> None:
        recv[layer].k0 = act[:, 0].clone()

    def on_scores(scores: Tensor, hook, layer: int) -> None:
        r = recv[layer]
        if scores.shape[-1] > 1 and not torch.isneginf(scores[..., 0, 1:]).all():
            raise EstimateUnavailable(
                f"{get_act_name('attn_scores', layer)} does not hold masked pre-softmax scores "
                "on this model (a TransformerLens 4 native bridge fires the pattern there): "
                "the P0-stream estimate cannot read them; use exact patching (Patcher.patch)"
            )
        rest = scores[..., 1:]
        attn = model.blocks[layer].attn
        if learned_attention_sinks(model.cfg):
            sink = attn.sinks.reshape(1, -1, 1, 1).expand(*rest.shape[:-1], 1).to(rest.dtype)
            rest = torch.cat([rest, sink], dim=-1)
        r.s0 = scores[..., 0].clone()
        r.rest = torch.logsumexp(rest, dim=-1)  # -inf at query 0: A[0, 0] = 1

    hooks: list[tuple[str, Callable]] = []
    for layer in layers:
        q_name, k_name = _names(patcher, layer)
        hooks += [(q_name, partial(on_q, layer=layer)), (k_name, partial(on_k, layer=layer))]
        hooks.append((get_act_name("attn_scores", layer), partial(on_scores, layer=layer)))
    cap = model.cfg.attn_scores_soft_cap
    with exclusive(model), torch.inference_mode():
        model.run_with_hooks(
            patcher.tokens, fwd_hooks=hooks, return_type=None, stop_at_layer=max(layers) + 1
        )
        for layer, r in recv.items():
            r.raw0 = softcap(p0_key_scores(r.q, r.k0, attention_scale(model, layer)), cap)
            r.clean_p0 = r.p0(r.s0).mean()
    return recv


def _patched_p0(
    patcher: PatchEngine, patches: list[tuple[Site, ...]], layers: Sequence[int], start: int
) -> dict[int, tuple[Tensor, Tensor]]:
    """P0's query and key at each receiver layer with each patch applied, each shaped
    ``[patch, batch, head, d_head]``: one stacked forward of the one-token prompts (P0's column
    is the whole prompt's, the model being causal), from block ``start`` on (0: from the tokens;
    else from the clean ``resid_pre[start]`` at P0, every patch being in block ``start`` or
    later)."""
    model, b, n = patcher.model, patcher.batch, len(patches)
    got: dict[str, Tensor] = {}

    def keep(act: Tensor, hook, name: str) -> None:
        got[name] = act[:, 0].reshape(n, b, *act.shape[2:]).clone()

    hooks = patcher.counterfactual_hooks(patches)
    hooks += [(name, partial(keep, name=name)) for la in layers for name in _names(patcher, la)]
    kwargs = patcher.block_kwargs(1) if RESUMES_FROM_RESIDUAL else {}
    if start == 0 or not RESUMES_FROM_RESIDUAL:
        first = patcher.tokens[:, :1].repeat(n, 1)
    else:
        first = patcher.clean[get_act_name("resid_pre", start)][:, :1].repeat(n, 1, 1)
        kwargs["start_at_layer"] = start
    with exclusive(model), torch.inference_mode():
        model.run_with_hooks(
            first, fwd_hooks=hooks, return_type=None, stop_at_layer=max(layers) + 1, **kwargs
        )
    return {la: (got[_names(patcher, la)[0]], got[_names(patcher, la)[1]]) for la in layers}


_MIN_ROWS = 512
"""One-token rows below which a stacked forward is dominated by per-operation overhead: the
column runs of consecutive blocks are merged until they fill this many."""


def _start_groups(sites: list[Site], batch: int) -> dict[int, list[int]]:
    """Site indices by the block their column run starts at (the embedding: block 0), the
    patches of consecutive blocks merged into one run from the first of them until it has
    ``_MIN_ROWS`` rows."""
    by_layer: dict[int, list[int]] = {}
    for i, s in enumerate(sites):
        by_layer.setdefault(max(0, s.order[0]), []).append(i)
    groups: dict[int, list[int]] = {}
    start: int | None = None
    for layer in sorted(by_layer):
        if start is None or len(groups[start]) * batch >= _MIN_ROWS:
            start = layer
            groups[start] = []
        groups[start] += by_layer[layer]
    return groups


def p0_stream_estimate(
    patcher: Patcher | PatchEngine,
    sites: Sequence[Site],
    readout: Readout | None = None,
    *,
    patches_per_pass: int = 512,
) -> PatchingResult:
    """Each single-site P0 patch's effect on the sink score through P0's keys, exact on P0's
    stream with every other position held clean (module docstring). ``values`` are the engine's
    clean value plus each estimate, so ``effects`` compare directly with ``Patcher.patch``.

    Cost: one clean forward, and per block and ``patches_per_pass`` patches patched in it, one
    forward of the one-token prompts from that block on.
    """
    patcher = engine_of(patcher)
    if patcher.conditions:
        raise EstimateUnavailable(
            "the P0-stream estimate runs P0's column alone, which a document mask or a moved "
            "position would not hold: use exact patching (Patcher.patch)"
        )
    sites = list(sites)
    readout = _check(patcher, sites, readout)
    if patches_per_pass < 1:
        raise UsageError("patches_per_pass must be >= 1")
    layers = list(readout.layers)
    model = patcher.model
    cap = model.cfg.attn_scores_soft_cap
    recv = _clean_receivers(patcher, layers)
    est = torch.zeros(len(sites), dtype=torch.float64)
    for start, members in _start_groups(sites, patcher.batch).items():
        read = [la for la in layers if la >= start]  # a patch cannot reach an earlier key
        for lo in range(0, len(members) if read else 0, patches_per_pass):
            idx = members[lo : lo + patches_per_pass]
            p0 = _patched_p0(patcher, [(sites[i],) for i in idx], read, start)
            with torch.inference_mode():
                for layer in read:
                    r, scale = recv[layer], attention_scale(model, layer)
                    q0, k0 = p0[layer]
                    raw = p0_key_scores(r.q, k0, scale)
                    # query 0 is P0's own, patched too (it matters only beside a learned sink)
                    raw[..., 0] = p0_key_scores(q0.unsqueeze(-3), k0, scale)[..., 0]
                    s0 = r.s0 + softcap(raw, cap) - r.raw0
                    moved = r.p0(s0).mean(dim=(-3, -2, -1)) - r.clean_p0
                    est[idx] += moved.double().cpu() / len(layers)  # est lives on the CPU
    clean = patcher.clean_value(readout)[0]
    return PatchingResult.from_estimates(
        sites, est, clean, readout.describe(), patcher.counterfactual.describe(), KIND
    )
