"""Nested patches share their common part: one patched run, then each patch continued from it.

``patch_nested(patcher, sites, cuts, metric)`` measures, for every cut ``L``, the metric with
only the sites of layers ``<= L`` patched (the embedding counts as below layer 0): the question
"where along the depth is the sink lost?" that ``circuits.circuit.faithfulness`` asks of a
circuit's complement. Patch ``L`` and the run with *every* site patched agree up to
``resid_pre[L + 1]``, so one run with every site patched records the residual stream, and
each cut continues from its ``resid_pre[L + 1]`` with nothing patched: ``1 + sum(n_layers - L
- 1) / n_layers`` forwards instead of one whole forward per cut. A receiver layer ``<= L`` reads
what the full run read (its input is the same); later ones are measured on the continuation.
The numbers equal ``patcher.patch`` on the same patches (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from circuits.backend import get_act_name
from circuits.patching.forward import PatchEngine, can_change
from circuits.patching.patcher import Patcher, engine_of
from circuits.patching.readouts import Readout
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Site, patch_name


def _layer(site: Site) -> int:
    return site.order[0]


def patch_nested(
    patcher: Patcher | PatchEngine,
    sites: Sequence[Site],
    cuts: Sequence[int],
    readout: Readout,
    *,
    desc: str = "nested patches",
) -> PatchingResult:
    """The readout with the sites of layers ``<= cut`` patched, for each cut (module docstring);
    the same result as ``patcher.patch([[s for s in sites if layer(s) <= cut] ...])``.

    The shared run applies to readouts whose value is the mean of per-layer columns, each read
    within its layer (``Readout.layer_columns``); any other readout gets one exact patched run
    per cut."""
    patcher = engine_of(patcher)
    nested = [[s for s in sites if _layer(s) <= cut] for cut in cuts]
    last = max(_layer(s) for s in sites)
    for s in sites:
        patcher.check_site(s)
    resolved = patcher.prepare(readout, last)
    layers = resolved.layer_columns()
    if layers is None or any(not p or not can_change(p, resolved, patcher.model) for p in nested):
        return patcher.patch(nested, resolved, desc=desc)  # no shared run for this question
    clean, _ = patcher.clean_value(resolved)
    wanted = {cut + 1 for cut in cuts if cut + 1 <= max(layers)}
    start = min(_layer(s) for s in sites)
    full, resid = _residual_stream(patcher, tuple(sites), resolved, start, wanted)
    detail = full.expand(len(cuts), -1).clone()  # receivers <= cut: what the full run read
    go_on = {k: cut + 1 for k, cut in enumerate(cuts) if cut + 1 in wanted}
    for idx in patcher.forward_groups(go_on):  # type: ignore[arg-type]
        _, more = patcher.run(
            resolved,
            starts=[go_on[k] for k in idx],
            patch_hooks=[],
            start_rows=[resid[go_on[k]] for k in idx],
        )
        assert more is not None
        for j, k in enumerate(idx):
            later = [i for i, r in enumerate(layers) if r > cuts[k]]
            detail[k, later] = more[j, later]
    return PatchingResult(
        names=[patch_name(p) for p in nested],
        patches=[[s.to_dict() for s in p] for p in nested],
        values=detail.mean(dim=1),
        clean=clean,
        metric=resolved.describe(),
        counterfactual=patcher.counterfactual.describe(),
        detail=detail,
        extra={"nested_cuts": list(cuts)},
    )


def _residual_stream(
    patcher: PatchEngine,
    sites: tuple[Site, ...],
    metric: Readout,
    start: int,
    layers: set[int],
) -> tuple[Tensor, dict[int, Tensor]]:
    """The metric's per-receiver detail in the run with every site patched, and ``resid_pre``
    of ``layers`` in it (read before any site at that hook is set)."""
    stream: dict[int, Tensor] = {}

    def keep(act: Tensor, hook) -> None:
        stream[hook.layer()] = act.clone()

    capture: list[tuple[str, Callable]] = [
        (get_act_name("resid_pre", la), keep) for la in sorted(layers)
    ]
    first = None if start < 0 else start
    with torch.inference_mode():
        _, detail = patcher.run(
            metric, starts=[first], patch_hooks=capture + patcher.counterfactual_hooks([sites])
        )
    assert detail is not None
    return detail[0], stream
