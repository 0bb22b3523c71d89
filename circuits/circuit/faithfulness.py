"""Faithfulness of a circuit at P0, and the sufficiency search for backups.

* ``faithfulness``: the sink with only the circuit's P0 components kept (every other P0
  component in layers before the last receiver -- the embedding, every other head, every other
  MLP -- set to its counterfactual), with the circuit's components set to their counterfactual,
  and with every P0 component patched (the floor), each as a share of the readout's span (fractions of the clean sink for the
  sink readout; ``circuits.circuit.readout_choice``).
* ``kept_through_layer``: the kept value when only the other components up to layer L are
  ablated, which locates where a circuit that is not sufficient loses the sink.
* ``find_backups``: a component can be needed only when its partners are gone -- two sources
  either of which suffices each move the sink by little alone, so a single-component sweep
  misses them. While ``kept < sufficiency``, the non-circuit components of the layer where
  ``kept_through_layer`` drops most (then the next) are tried one at a time, and the one that
  raises ``kept`` most (by at least ``backup_min_gain``) joins the circuit (at most
  ``max_backups``). After a pick the same layer is tried again: one layer can hold several
  sources either of which suffices (e.g. attn0 and mlp0 late in a training run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from circuits.backend import ModelConfig
from circuits.circuit.config import DiscoverConfig
from circuits.circuit.readout_choice import Span
from circuits.core.conventions import P0_POSITIONS
from circuits.patching.nested import patch_nested
from circuits.patching.patcher import Patcher
from circuits.patching.readouts import Readout
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Site, component_sites


@dataclass
class Faithfulness:
    """kept / ablated / floor (shares of the readout's span: of the clean sink for the sink), the other P0 components that were
    ablated to measure ``kept``, and the three patched runs."""

    kept: float
    ablated: float
    floor: float
    others: list[Site]
    runs: PatchingResult


def all_p0_components(cfg: ModelConfig, layers: Sequence[int]) -> list[Site]:
    """Every component's output at P0 in ``layers``: the embedding, attention and MLPs."""
    kinds = ("embed", "attn") if cfg.attn_only else ("embed", "attn", "mlp")
    return component_sites(cfg.n_layers, layers, positions=P0_POSITIONS, kinds=kinds)


def others_of(circuit: Sequence[Site], everything: Sequence[Site], cfg: ModelConfig) -> list[Site]:
    """The P0 components outside ``circuit`` among ``everything``: in a layer where the circuit
    keeps some heads (an MoE block where it keeps some experts), that layer's other heads
    (experts) instead of the whole attention (MLP) output."""
    n_heads = cfg.n_heads
    circuit_keys = {(s.kind, s.layer, s.unit) for s in circuit}
    n_experts = int(getattr(cfg, "num_experts", None) or 0)
    # a component the circuit keeps only units of -> (unit kind, number of units)
    split = {("attn", s.layer): ("head", n_heads) for s in circuit if s.kind == "head"}
    split |= {("mlp", s.layer): ("expert", n_experts) for s in circuit if s.kind == "expert"}
    others: list[Site] = []
    for s in everything:
        if (s.kind, s.layer, s.unit) in circuit_keys:
            continue
        if (s.kind, s.layer) in split:
            unit, n = split[(s.kind, s.layer)]
            others.extend(
                Site(unit, s.layer, **{unit: u})  # type: ignore[arg-type]
                for u in range(n)
                if (unit, s.layer, u) not in circuit_keys
            )
            continue
        others.append(s)
    return others


def faithfulness(
    patcher: Patcher,
    metric: Readout,
    circuit: list[Site],
    everything: list[Site],
    span: Span,
) -> Faithfulness:
    """The readout with every non-circuit P0 component ablated, with the circuit ablated, and
    with everything ablated, each as a share of ``span``. In a layer where the circuit keeps
    some heads (an MoE block where it keeps some experts), the layer's other heads (experts) are the "other" components."""
    others = others_of(circuit, everything, patcher.model.cfg)
    patches = [others or [Site("embed")], circuit or [Site("embed")], everything]
    faith = patcher.patch(patches, metric, desc="faithfulness")
    kept = span.fraction(float(faith.values[0])) if others else 1.0
    ablated = span.fraction(float(faith.values[1])) if circuit else 1.0
    return Faithfulness(kept, ablated, span.fraction(float(faith.values[2])), others, faith)


def kept_through_layer(
    patcher: Patcher, metric: Readout, others: list[Site], span: Span
) -> list[dict[str, float]]:
    """Where the kept sink is lost: the sink, as a fraction of clean, with the circuit kept and
    only the non-circuit P0 components of layers <= L ablated (the embedding counts as below
    layer 0), for every layer L that has one (the last value is ``kept`` itself). The cuts share
    one patched run (``circuits.patching.nested``)."""
    cuts = sorted({s.layer for s in others if s.kind != "embed"})
    if not cuts:  # every P0 component is in the circuit (or only the embedding is not)
        return []
    res = patch_nested(patcher, others, cuts, metric, desc="faithfulness by layer")
    return [
        {"layer": cut, "kept": span.fraction(float(v))}
        for cut, v in zip(cuts, res.values.tolist(), strict=True)
    ]


def _best_in_layer(
    patcher: Patcher,
    metric: Readout,
    others: list[Site],
    backups: list[Site],
    layer: int,
    first_layer: int,
    span: Span,
) -> tuple[dict[str, float], Site] | None:
    """Each non-circuit component of ``layer`` tried as a backup (kept with the circuit, every
    other one ablated): kept per candidate and the best one (None: no candidate left)."""
    candidates = [
        s
        for s in others
        if s not in backups and (s.layer == layer if s.kind != "embed" else layer == first_layer)
    ]
    if not candidates:
        return None
    rest = [s for s in others if s not in backups]
    patches = [[s for s in rest if s != c] or [Site("embed")] for c in candidates]
    res = patcher.patch(patches, metric, desc=f"backups in layer {layer}")
    tried = {
        c.name: span.fraction(float(v))
        for c, v in zip(candidates, res.values.tolist(), strict=True)
    }
    return tried, max(candidates, key=lambda c: tried[c.name])


def find_backups(
    patcher: Patcher,
    metric: Readout,
    others: list[Site],
    kept: float,
    kept_through: list[dict[str, float]],
    span: Span,
    config: DiscoverConfig,
) -> tuple[list[Site], list[dict[str, Any]]]:
    """Greedy sufficiency search (module docstring). Returns the backups in the order
    found and one record per step (layer tried, each candidate's kept, the choice)."""
    backups: list[Site] = []
    steps: list[dict[str, Any]] = []
    if kept >= config.sufficiency or not kept_through or config.max_backups == 0:
        return backups, steps
    drops = []
    prev = 1.0  # nothing ablated: the clean sink
    for row in kept_through:
        drops.append((prev - row["kept"], int(row["layer"])))
        prev = row["kept"]
    first_layer = int(kept_through[0]["layer"])
    for _, layer in sorted(drops, key=lambda d: -d[0]):
        while kept < config.sufficiency and len(backups) < config.max_backups:
            pick = _best_in_layer(patcher, metric, others, backups, layer, first_layer, span)
            if pick is None:
                break
            tried, best = pick
            gain = tried[best.name] - kept
            chosen = gain >= config.backup_min_gain
            steps.append(
                {
                    "layer": layer,
                    "kept_before": kept,
                    "candidates": tried,
                    "chosen": best.name if chosen else None,
                }
            )
            if not chosen:
                break
            backups.append(best)
            kept = tried[best.name]
    return backups, steps
