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

from collections.abc import Sequence

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from circuits.errors import UsageError
from circuits.metrics import sink_score
from circuits.patching import Patcher, PatchingResult, SinkMetric, Site


def attribution_patch(
    patcher: Patcher, sites: Sequence[Site], metric: SinkMetric | None = None
) -> PatchingResult:
    """Attribution-patching estimate of each single-site patch's effect on the sink metric.

    ``values`` are ``clean + estimate`` so that ``effects`` compare directly with
    ``Patcher.patch`` on the same sites and metric.
    """
    model = patcher.model
    sites = list(sites)
    if not sites:
        raise UsageError("no sites given")
    for s in sites:
        patcher._check_site(s)
    if metric is None:
        metric = SinkMetric()
    if not isinstance(metric, SinkMetric):
        raise UsageError("attribution patching supports the sink metric only (it needs a gradient)")
    last = max(-1 if s.kind == "embed" else s.layer for s in sites)
    metric = metric.resolved(last, model.cfg.n_layers)
    metric.validate(model, patcher.n_pos)
    receivers = list(metric.receivers or [])
    names = sorted({s.hook_name for s in sites})
    acts: dict[str, Tensor] = {}
    scores: dict[int, Tensor] = {}

    def keep(act: Tensor, hook) -> None:
        acts[hook.name] = act

    def on_pattern(pattern: Tensor, hook) -> None:
        scores[hook.layer()] = sink_score(pattern).mean()

    hooks = [(n, keep) for n in names] + [(get_act_name("pattern", r), on_pattern) for r in receivers]
    requires = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.enable_grad():
            embed = model.hook_dict[get_act_name("embed")]

            def grad_root(act: Tensor, hook) -> Tensor:
                return act.detach().requires_grad_(True)

            model.run_with_hooks(
                patcher.tokens,
                fwd_hooks=[(embed.name, grad_root), *hooks],
                stop_at_layer=max(receivers) + 1,
            )
            value = torch.stack([scores[r] for r in receivers]).mean()
            grads = torch.autograd.grad(value, [acts[n] for n in names], allow_unused=True)
    finally:
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)
    grad = dict(zip(names, grads, strict=True))
    clean = float(value.detach())
    est = torch.empty(len(sites))
    for i, s in enumerate(sites):
        g = grad[s.hook_name]
        if g is None:
            est[i] = 0.0
            continue
        diff = (patcher.cf[s.hook_name] - patcher.clean[s.hook_name]) * g.detach()
        pos = slice(None) if s.positions is None else list(s.positions)
        diff = diff[:, pos] if s.head is None else diff[:, pos, s.head]
        est[i] = diff.sum()
    return PatchingResult(
        names=[s.name for s in sites],
        patches=[[s.to_dict()] for s in sites],
        values=clean + est,
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
