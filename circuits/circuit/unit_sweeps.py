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

from circuits.backend.experts import experts_unavailable
from circuits.circuit.record import (
    EffectTable,
    ExpertLayerChoice,
    ExpertSweep,
    HeadLayerChoice,
    HeadSweep,
    StepResult,
)
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
) -> tuple[PatchingResult, dict[int, tuple[list[Site], float, float, float, bool]]]:
    """Patch every unit of ``layers`` alone, then each layer's picked units together; per layer:
    (picked units, their joint relative effect, the component's, cover, whether they replace
    it)."""
    config, patcher = state.config, state.patcher
    units = [u for layer in layers for u in units_of(layer)]
    alone = patcher.patch(units, state.metric, desc=desc)
    state.relative.update(zip(alone.names, (alone.effects / state.clean).tolist(), strict=True))
    picks = {
        layer: [u for u in units_of(layer) if abs(state.relative[u.name]) >= config.head_threshold]
        for layer in layers
    }
    together = [tuple(picks[layer]) for layer in layers if picks[layer]]
    joint = patcher.patch(together, state.metric, desc=f"joint {desc}") if together else None
    choices, k = {}, 0
    for layer in layers:
        layer_rel = state.relative[Site(parent, layer).name]
        rel = 0.0
        if picks[layer] and joint is not None:
            rel, k = float(joint.effects[k] / state.clean), k + 1
        cover = rel / layer_rel if layer_rel else 0.0
        use_units = bool(picks[layer]) and cover >= config.head_cover
        choices[layer] = (picks[layer], rel, layer_rel, cover, use_units)
    return alone, choices


def head_sweep(state: DiscoveryState) -> StepResult:
    """Each head of the selected attention layers; a layer's selected heads replace the layer's
    node when, patched together, they carry at least ``head_cover`` of its effect."""
    n_heads = state.cfg.n_heads
    layers = sorted({s.layer for s in state.selected if s.kind == "attn"})
    nodes = [s for s in state.selected if s.kind != "attn"]
    chosen: dict[int, HeadLayerChoice] = {}
    if layers:

        def heads_of(layer: int) -> list[Site]:
            return [Site("head", layer, head=h, positions=P0_POSITIONS) for h in range(n_heads)]

        state.heads, choices = _descend(state, "attn", layers, heads_of, "head sweep")
        for layer, (picks, rel, layer_rel, cover, use) in choices.items():
            chosen[layer] = HeadLayerChoice(
                heads=[s.head for s in picks if s.head is not None],
                joint_relative=rel,
                layer_relative=layer_rel,
                cover=cover,
                node="heads" if use else "layer",
            )
            nodes.extend(picks if use else [Site("attn", layer)])
    state.nodes = by_position(nodes)
    state.say(f"circuit nodes: {[s.name for s in state.nodes]}")
    return HeadSweep(
        heads=None if state.heads is None else EffectTable.of_result(state.heads),
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

    state.experts, choices = _descend(state, "mlp", layers, experts_of, "expert sweep")
    chosen: dict[int, ExpertLayerChoice] = {}
    nodes = [s for s in state.nodes if s.kind != "mlp" or s.layer not in choices]
    for layer, (picks, rel, layer_rel, cover, use) in choices.items():
        chosen[layer] = ExpertLayerChoice(
            experts=[s.expert for s in picks if s.expert is not None],
            joint_relative=rel,
            layer_relative=layer_rel,
            cover=cover,
            node="experts" if use else "layer",
        )
        nodes.extend(picks if use else [Site("mlp", layer)])
    state.nodes = by_position(nodes)
    state.say(f"circuit nodes with experts: {[s.name for s in state.nodes]}")
    return ExpertSweep(experts=EffectTable.of_result(state.experts), expert_layers=chosen)
