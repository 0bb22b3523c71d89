"""Descending into a selected block's units: the heads of a selected attention layer, the
experts of a selected mixture-of-experts MLP.

Both steps ask the same question of a selected component (``attn L`` or ``mlp L``): which of
its units carry its effect on the sink? Each unit is patched alone at P0; those whose relative
effect reaches ``head_threshold`` are patched together, and they replace the component's node
in the circuit when together they carry at least ``head_cover`` of the component's own effect
(otherwise the component stays one node). An expert is its routed contribution at P0
(``circuits.backend.experts``; ``docs/science.md``, "Experts").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from circuits.backend.experts import experts_unavailable
from circuits.circuit.record import ExpertLayerChoice, HeadLayerChoice
from circuits.circuit.step_results import ExpertSweep, HeadSweep, StepResult
from circuits.circuit.steps import DiscoveryState, by_position
from circuits.core.conventions import P0_POSITIONS
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Site


def _descend(
    state: DiscoveryState,
    parent: str,
    layers: list[int],
    units_of: Callable[[int], list[Site]],
    desc: str,
    choice: type[HeadLayerChoice] | type[ExpertLayerChoice],
) -> tuple[PatchingResult, dict[int, Any], list[Site]]:
    """Patch every unit of ``layers`` alone, then each layer's picked units together. Returns
    the single patches, each layer's ``choice`` (its picked units, their joint relative effect,
    the component's, cover, and whether they replace it) and the circuit nodes of ``layers``
    (the picked units, or the component itself)."""
    config, patcher = state.config, state.patcher
    field = "heads" if choice is HeadLayerChoice else "experts"  # the unit list, and its node
    units = [u for layer in layers for u in units_of(layer)]
    alone = patcher.patch(units, state.metric, desc=desc)
    assert state.span is not None
    width = state.span.width
    state.relative.update(zip(alone.names, (alone.effects / width).tolist(), strict=True))
    picks = {
        layer: [u for u in units_of(layer) if abs(state.relative[u.name]) >= config.head_threshold]
        for layer in layers
    }
    together = [tuple(picks[layer]) for layer in layers if picks[layer]]
    joint = patcher.patch(together, state.metric, desc=f"joint {desc}") if together else None
    chosen: dict[int, Any] = {}
    nodes: list[Site] = []
    k = 0
    for layer in layers:
        layer_rel = state.relative[Site(parent, layer).name]
        rel = 0.0
        if picks[layer] and joint is not None:
            rel, k = float(joint.effects[k] / width), k + 1
        cover = rel / layer_rel if layer_rel else 0.0
        use_units = bool(picks[layer]) and cover >= config.head_cover
        chosen[layer] = choice.model_validate(
            {
                field: [u.unit for u in picks[layer]],
                "joint_relative": rel,
                "layer_relative": layer_rel,
                "cover": cover,
                "node": field if use_units else "layer",
            }
        )
        nodes.extend(picks[layer] if use_units else [Site(parent, layer)])
    return alone, chosen, nodes


def head_sweep(state: DiscoveryState) -> StepResult:
    """Each head of the selected attention layers; a layer's selected heads replace the layer's
    node when, patched together, they carry at least ``head_cover`` of its effect."""
    n_heads = state.cfg.n_heads
    layers = sorted({s.layer for s in state.selected if s.kind == "attn"})
    nodes = [s for s in state.selected if s.kind != "attn"]
    chosen: dict[int, Any] = {}
    if layers:

        def heads_of(layer: int) -> list[Site]:
            return [Site("head", layer, head=h, positions=P0_POSITIONS) for h in range(n_heads)]

        state.heads, chosen, found = _descend(
            state, "attn", layers, heads_of, "head sweep", HeadLayerChoice
        )
        nodes += found
    state.nodes = by_position(nodes)
    state.say(f"circuit nodes: {[s.name for s in state.nodes]}")
    return HeadSweep(
        heads=None if state.heads is None else state.table(state.heads),
        head_layers=chosen,
    )


def expert_sweep(state: DiscoveryState) -> StepResult:
    """Each expert of the selected MoE MLPs (their routed contributions at P0); a block's
    selected experts replace its MLP node when, patched together, they carry at least
    ``head_cover`` of its effect. Nothing on a dense model."""
    model = state.patcher.model
    layers = sorted({s.layer for s in state.nodes if s.kind == "mlp"})
    if experts_unavailable(model) is not None or not layers:
        return ExpertSweep()
    n_experts = int(model.cfg.num_experts)

    def experts_of(layer: int) -> list[Site]:
        return [Site("expert", layer, expert=e, positions=P0_POSITIONS) for e in range(n_experts)]

    state.experts, chosen, found = _descend(
        state, "mlp", layers, experts_of, "expert sweep", ExpertLayerChoice
    )
    kept = [s for s in state.nodes if s.kind != "mlp" or s.layer not in chosen]
    state.nodes = by_position(kept + found)
    state.say(f"circuit nodes with experts: {[s.name for s in state.nodes]}")
    return ExpertSweep(experts=state.table(state.experts), expert_layers=chosen)
