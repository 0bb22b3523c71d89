"""Attribution patching: a linear estimate of every patch's effect from one forward and one backward.

For a site with clean activation ``a``, counterfactual ``a'`` and metric ``M``, attribution
patching (Nanda 2023; Syed et al. 2023) estimates the exact patching effect
``M(a') - M(a)`` by the first-order term ``sum over prompts and the site's positions (and head)
of (a' - a) . dM/da`` at the clean run. One forward and one backward give it for every site at
once. It is only a first pass: the P0 circuit writes a *massive* activation, far outside the
linear regime, so ``discover`` always reports its Pearson correlation with the exact effects it
measured next to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from circuits.core.errors import UsageError
from circuits.metrics.attention import sink_score
from circuits.patching.engine import Patcher
from circuits.patching.readouts import SinkMetric
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Site


def _check(
    patcher: Patcher, sites: list[Site], metric: SinkMetric | None, prompts_per_pass: int
) -> SinkMetric:
    if not sites:
        raise UsageError("no sites given")
    for s in sites:
        patcher._check_site(s)
    if metric is None:
        metric = SinkMetric()
    if not isinstance(metric, SinkMetric):
        raise UsageError("attribution patching supports the sink metric only (it needs a gradient)")
    if prompts_per_pass < 1:
        raise UsageError("prompts_per_pass must be >= 1")
    last = max(-1 if s.kind == "embed" else s.layer for s in sites)
    metric = metric.resolved(last, patcher.model.cfg.n_layers)
    metric.validate(patcher.model, patcher.n_pos)
    return metric


def _chunk_gradients(
    patcher: Patcher, rows: slice, names: list[str], receivers: list[int], share: float
) -> tuple[float, dict[str, Tensor | None]]:
    """The metric's value on prompts ``rows`` (times their ``share`` of the batch) and its
    gradient with respect to the activations at ``names``."""
    model = patcher.model
    acts: dict[str, Tensor] = {}
    scores: dict[int, Tensor] = {}

    def keep(act: Tensor, hook) -> None:
        acts[hook.name] = act

    def on_pattern(pattern: Tensor, hook) -> None:
        scores[hook.layer()] = sink_score(pattern).mean()

    def grad_root(act: Tensor, hook) -> Tensor:
        return act.detach().requires_grad_(True)

    hooks: list[tuple[str, Callable]] = [(get_act_name("embed"), grad_root)]
    hooks += [(n, keep) for n in names]
    hooks += [(get_act_name("pattern", r), on_pattern) for r in receivers]
    with torch.enable_grad():
        model.run_with_hooks(
            patcher.tokens[rows], fwd_hooks=hooks, stop_at_layer=max(receivers) + 1
        )
        value = torch.stack([scores[r] for r in receivers]).mean() * share
        grads = torch.autograd.grad(value, [acts[n] for n in names], allow_unused=True)
    return float(value.detach()), dict(zip(names, grads, strict=True))


def attribution_patch(
    patcher: Patcher,
    sites: Sequence[Site],
    metric: SinkMetric | None = None,
    *,
    prompts_per_pass: int = 2,
) -> PatchingResult:
    """Attribution-patching estimate of each single-site patch's effect on the sink metric.

    ``values`` are ``clean + estimate`` so that ``effects`` compare directly with
    ``Patcher.patch`` on the same sites and metric.

    The sink metric is a mean over prompts, so its gradient splits over them: the forward and
    backward run on ``prompts_per_pass`` prompts at a time (each chunk's gradient scaled by its
    share of the batch), which bounds the memory the backward holds without changing the result.
    """
    sites = list(sites)
    metric = _check(patcher, sites, metric, prompts_per_pass)
    receivers = list(metric.layers)
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
            value, grad = _chunk_gradients(patcher, rows, names, receivers, share)
            clean += value
            for i, s in enumerate(sites):
                g = grad[s.hook_name]
                if g is None:
                    continue
                diff = (patcher.cf[s.hook_name][rows] - patcher.clean[s.hook_name][rows]) * g
                pos = slice(None) if s.positions is None else list(s.positions)
                diff = diff[:, pos] if s.head is None else diff[:, pos, s.head]
                est[i] += float(diff.sum())
    finally:
        for p, r in zip(params, requires, strict=True):
            p.requires_grad_(r)
    return PatchingResult(
        names=[s.name for s in sites],
        patches=[[s.to_dict()] for s in sites],
        values=(clean + est).float(),
        clean=clean,
        metric=metric.describe(),
        counterfactual=patcher.counterfactual,
        kind="attribution",
    )


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
