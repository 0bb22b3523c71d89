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
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from circuits.patching.readouts import Metric, SinkMetric
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Site, patch_name

if TYPE_CHECKING:
    from circuits.patching.engine import Patcher


def _layer(site: Site) -> int:
    return -1 if site.kind == "embed" else site.layer


def patch_nested(
    patcher: Patcher,
    sites: Sequence[Site],
    cuts: Sequence[int],
    metric: SinkMetric,
    *,
    desc: str = "nested patches",
) -> PatchingResult:
    """The metric with the sites of layers ``<= cut`` patched, for each cut (module docstring);
    the same result as ``patcher.patch([[s for s in sites if layer(s) <= cut] ...])``."""
    nested = [[s for s in sites if _layer(s) <= cut] for cut in cuts]
    last = max(_layer(s) for s in sites)
    resolved = metric.resolved(last, patcher.model.cfg.n_layers)
    read = resolved.read_order()
    if any(not p or min(s.order for s in p) >= read for p in nested):  # type: ignore[operator]
        return patcher.patch(nested, metric, desc=desc)  # a cut with nothing that can act
    for s in sites:
        patcher._check_site(s)
    prepared = patcher._prepare_metric(resolved, last)
    assert isinstance(prepared, SinkMetric)
    resolved = prepared
    clean, _ = patcher.clean_value(resolved)
    wanted = {cut + 1 for cut in cuts if cut + 1 <= max(resolved.layers)}
    start = min(_layer(s) for s in sites)
    full, resid = _residual_stream(patcher, tuple(sites), resolved, start, wanted)
    detail = full.expand(len(cuts), -1).clone()  # receivers <= cut: what the full run read
    go_on = {k: cut + 1 for k, cut in enumerate(cuts) if cut + 1 in wanted}
    for idx in patcher._jobs(go_on):  # type: ignore[arg-type]
        _, more = patcher._forward(
            resolved,
            starts=[go_on[k] for k in idx],
            patch_hooks=[],
            start_rows=[resid[go_on[k]] for k in idx],
        )
        assert more is not None
        for j, k in enumerate(idx):
            later = [i for i, r in enumerate(resolved.layers) if r > cuts[k]]
            detail[k, later] = more[j, later]
    return PatchingResult(
        names=[patch_name(p) for p in nested],
        patches=[[s.to_dict() for s in p] for p in nested],
        values=detail.mean(dim=1),
        clean=clean,
        metric=resolved.describe(),
        counterfactual=patcher.counterfactual,
        detail=detail,
        extra={"nested_cuts": list(cuts)},
    )


def _residual_stream(
    patcher: Patcher,
    sites: tuple[Site, ...],
    metric: Metric,
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
        _, detail = patcher._forward(
            metric, starts=[first], patch_hooks=capture + patcher._setter_hooks([sites])
        )
    assert detail is not None
    return detail[0], stream
