"""Attribution patching: a linear estimate of every patch's effect from one forward and one backward.

For a site with clean activation ``a``, counterfactual ``a'`` and metric ``M``, attribution
patching (Nanda 2023; Syed et al. 2023) estimates the exact patching effect
``M(a') - M(a)`` by the first-order term ``sum over prompts and the site's positions (and head)
of (a' - a) . dM/da`` at the clean run. One forward and one backward give it for every site at
once. It is only a first pass: the P0 circuit writes a *massive* activation, far outside the
linear regime, so ``discover`` always reports its Pearson correlation with the exact effects it
measured next to it.

Integrated gradients (``ig_steps > 1``, the idea of EAP-IG, Hanna et al. 2024, and of Marks et
al. 2024's node attributions): instead of the gradient at the clean run, average it along a path
from the clean run to the counterfactual one. At ``alpha`` in the midpoints of ``ig_steps`` equal
intervals, every *interpolated* site's activation is shifted by ``alpha * (a' - a)`` (added, so
that upstream shifts still propagate downstream), and each site's gradient is read in that run;
the estimate is ``(a' - a) . mean_alpha dM/da``. The interpolated sites are the components
(embed, attn, mlp) when any is given, else the sites themselves (e.g. heads only): heads are read
inside the component path, never shifted on top of their layer's attn_out (that would count
their change twice). ``ig_steps=1`` is plain attribution patching (the gradient at alpha = 0).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from circuits.backend import get_act_name
from circuits.core.arguments import Count, NonEmpty, checked
from circuits.core.errors import UsageError
from circuits.core.model_lock import exclusive
from circuits.metrics.attention import sink_score
from circuits.patching.forward import PatchEngine, prepare_sink_estimate
from circuits.patching.patcher import Patcher, engine_of
from circuits.patching.readouts import Readout, SinkScore
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Site


def _check(
    patcher: PatchEngine,
    sites: list[Site],
    metric: Readout | None,
    prompts_per_pass: int,
    ig_steps: int,
) -> SinkScore:
    if not sites:
        raise UsageError("no sites given")
    for s in sites:
        patcher.check_site(s)
    if prompts_per_pass < 1:
        raise UsageError("prompts_per_pass must be >= 1")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
        raise UsageError(
            f"ig_steps must be an integer >= 1 (1: plain attribution), got {ig_steps!r}"
        )
    return prepare_sink_estimate(patcher, sites, metric, "attribution patching here differentiates")


def _interpolated(sites: list[Site]) -> list[Site]:
    """The sites an integrated-gradients path shifts (see the module docstring)."""
    components = [s for s in sites if s.kind in ("embed", "attn", "mlp")]
    return components or sites


def _shift_hooks(
    patcher: PatchEngine, sites: list[Site], rows: slice, alpha: float
) -> list[tuple[str, Callable]]:
    """Hooks adding ``alpha * (counterfactual - clean)`` at each site's positions (and head)."""
    hooks: list[tuple[str, Callable]] = []
    for site in sites:
        name = site.hook_name
        delta = alpha * (patcher.cf[name][rows] - patcher.clean[name][rows])
        pos = slice(None) if site.positions is None else list(site.positions)

        def shift(act: Tensor, hook, delta=delta, pos=pos, head=site.unit) -> Tensor:
            act = act.clone()
            if head is None:
                act[:, pos] = act[:, pos] + delta[:, pos]
            else:
                act[:, pos, head] = act[:, pos, head] + delta[:, pos, head]
            return act

        hooks.append((name, shift))
    return hooks


def _chunk_gradients(
    patcher: PatchEngine,
    rows: slice,
    names: list[str],
    receivers: list[int],
    share: float,
    shifts: list[tuple[str, Callable]],
) -> tuple[float, dict[str, Tensor | None]]:
    """The metric's value on prompts ``rows`` (times their ``share`` of the batch) and its
    gradient with respect to the activations at ``names``, with the ``shifts`` hooks applied
    (none: the clean run)."""
    model = patcher.model
    acts: dict[str, Tensor] = {}
    scores: dict[int, Tensor] = {}

    def keep(act: Tensor, hook, name: str) -> Tensor:
        # keyed by legacy name (a bridge's differs); returned, so that on a bridge, whose
        # ``hook_z`` hands hooks a reshaped copy, the forward goes on through this tensor
        acts[name] = act
        return act

    def on_pattern(pattern: Tensor, hook, layer: int) -> None:
        scores[layer] = sink_score(pattern).mean()

    def grad_root(act: Tensor, hook) -> Tensor:
        return act.detach().requires_grad_(True)

    hooks: list[tuple[str, Callable]] = [(get_act_name("embed"), grad_root)]
    hooks += [(n, partial(keep, name=n)) for n in names]
    hooks += shifts  # an added constant leaves the gradient as is
    hooks += [(get_act_name("pattern", r), partial(on_pattern, layer=r)) for r in receivers]
    with exclusive(model), torch.enable_grad():
        model.run_with_hooks(
            patcher.tokens[rows], fwd_hooks=hooks, stop_at_layer=max(receivers) + 1
        )
        value = torch.stack([scores[r] for r in receivers]).mean() * share
        grads = torch.autograd.grad(value, [acts[n] for n in names], allow_unused=True)
    return float(value.detach()), dict(zip(names, grads, strict=True))


@checked
def attribution_patch(
    patcher: Patcher | PatchEngine,
    sites: NonEmpty[Site],
    readout: Readout | None = None,
    *,
    prompts_per_pass: Count = 2,
    ig_steps: Count = 1,
) -> PatchingResult:
    """Attribution-patching estimate of each single-site patch's effect on the sink readout
    (``ig_steps > 1``: integrated gradients along the clean -> counterfactual path, see the
    module docstring; it costs ``ig_steps`` forwards and backwards).

    ``values`` are ``clean + estimate`` so that ``effects`` compare directly with
    ``Patcher.patch`` on the same sites and readout.

    The sink readout is a mean over prompts, so its gradient splits over them: the forward and
    backward run on ``prompts_per_pass`` prompts at a time (each chunk's gradient scaled by its
    share of the batch), which bounds the memory the backward holds without changing the result.
    """
    patcher = engine_of(patcher)
    if patcher.conditions:
        raise UsageError(
            "attribution patching under a document mask or moved positions is not supported: "
            "use exact patching (Patcher.patch)"
        )
    sites = list(sites)
    readout = _check(patcher, sites, readout, prompts_per_pass, ig_steps)
    path = _interpolated(sites)
    alphas = [0.0] if ig_steps == 1 else [(j + 0.5) / ig_steps for j in range(ig_steps)]
    receivers = list(readout.layers)
    names = sorted({s.hook_name for s in sites})
    n_prompts = patcher.tokens.shape[0]
    clean = 0.0
    est = torch.zeros(len(sites), dtype=torch.float64)
    params = list(patcher.model.parameters())
    requires = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        for lo in range(0, n_prompts, prompts_per_pass):
            rows = slice(lo, min(lo + prompts_per_pass, n_prompts))
            share = (rows.stop - rows.start) / n_prompts
            grads: dict[str, Tensor | None] = {}
            for alpha in alphas:
                shifts = _shift_hooks(patcher, path, rows, alpha) if alpha else []
                value, grad = _chunk_gradients(patcher, rows, names, receivers, share, shifts)
                if not alpha:
                    clean += value
                for n, g in grad.items():
                    if g is not None:
                        prev = grads.get(n)
                        grads[n] = g / len(alphas) if prev is None else prev + g / len(alphas)
            for i, s in enumerate(sites):
                g = grads.get(s.hook_name)
                if g is None:
                    continue
                diff = (patcher.cf[s.hook_name][rows] - patcher.clean[s.hook_name][rows]) * g
                pos = slice(None) if s.positions is None else list(s.positions)
                diff = diff[:, pos] if s.unit is None else diff[:, pos, s.unit]
                est[i] += float(diff.sum())
    finally:
        for p, r in zip(params, requires, strict=True):
            p.requires_grad_(r)
    if alphas[0]:  # no pass ran at the clean point: the engine's cached clean value
        clean = patcher.clean_value(readout)[0]
    kind = "attribution" if ig_steps == 1 else f"integrated gradients, {ig_steps} steps"
    return PatchingResult.from_estimates(
        sites, est, clean, readout.describe(), patcher.counterfactual.describe(), kind
    )


@checked
def pearson(a: Tensor, b: Tensor) -> float | None:
    """Pearson correlation of two equal-length vectors (None if either is constant or too short)."""
    a, b = a.double().flatten(), b.double().flatten()
    if a.numel() < 3:
        return None
    a, b = a - a.mean(), b - b.mean()
    den = a.norm() * b.norm()
    if den == 0:
        return None
    return float((a * b).sum() / den)
