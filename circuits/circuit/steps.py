"""The discovery pipeline's steps. Each is ``step(state: DiscoveryState) -> StepResult``: it reads
what earlier steps found (the typed ``state.record`` and the state's working fields: sites,
engine results) and returns its own sections, typed (``circuits.circuit.record``), which the
pipeline takes into the record. ``circuits.circuit.discover.STEPS`` lists them in order; a new
step is a new function in that list, its sections in ``DiscoveryRecord`` and a ``step_result``.

Every step patches P0 only, with one counterfactual, and measures one readout: by default the
Gu et al. sink score of the receiver layers (``docs/science.md``, "Discover"); effects are
shares of the readout's span (``circuits.circuit.readout_choice``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from circuits.circuit.config import DiscoverConfig
from circuits.circuit.faithfulness import (
    Faithfulness,
    all_p0_components,
    faithfulness,
    find_backups,
    kept_through_layer,
)
from circuits.circuit.readout_choice import Span, span_of
from circuits.circuit.record import (
    Additivity,
    BackupSearch,
    BackupStep,
    CircuitFaithfulness,
    CleanSink,
    CoreFaithfulness,
    DiscoveryRecord,
    EffectTable,
    KeptAtLayer,
    ReadoutSpan,
    SinkBaseline,
)
from circuits.circuit.step_results import (
    Agreement,
    CleanRuns,
    ComponentSweep,
    FaithfulnessFound,
    FirstPass,
    PathsFound,
    StepResult,
)
from circuits.core.conventions import P0_POSITIONS
from circuits.patching.attribution import attribution_patch, pearson
from circuits.patching.patcher import Patcher
from circuits.patching.readouts import PatternReadout, Readout, SinkScore
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Receiver, Site, component_sites, head_sites, path_exists
from circuits.patching.stream import EstimateUnavailable, p0_stream_estimate


@dataclass
class DiscoveryState:
    """What the steps share: the engine, the metric, the typed record of what was found so far
    and the working objects (sites, engine results) behind it."""

    patcher: Patcher
    config: DiscoverConfig
    metric: Readout
    """The readout asked (``DiscoverConfig.readout``); ``sink`` measures the receivers' sink."""
    sink: SinkScore
    """The receivers' sink score, recorded whatever the readout."""
    record: DiscoveryRecord
    say: Callable[[str], None]
    clean: float = 0.0
    """The readout's clean value."""
    span: Span | None = None
    first_pass_effects: dict[str, float] = field(default_factory=dict)
    exact_first_pass: PatchingResult | None = None
    """The first pass, when it was exact patching of every component (a readout other than
    attention to P0): the component sweep's result."""
    relative: dict[str, float] = field(default_factory=dict)
    """Exact readout change / span of every component, head and expert patched."""
    components: PatchingResult | None = None
    heads: PatchingResult | None = None
    experts: PatchingResult | None = None
    selected: list[Site] = field(default_factory=list)
    nodes: list[Site] = field(default_factory=list)
    backups: list[Site] = field(default_factory=list)
    faith: Faithfulness | None = None

    @property
    def cfg(self):
        return self.patcher.model.cfg

    @property
    def asks_sink(self) -> bool:
        """Whether the question is the sink itself (``DiscoverConfig.readout == "sink"``)."""
        return self.metric is self.sink

    def table(self, result: PatchingResult) -> EffectTable:
        """``result`` as a record table, its relative effects on the readout's span (a sink
        readout keeps the engine's: effect / each path's own clean sink)."""
        if self.asks_sink or self.span is None:
            return EffectTable.of_result(result)
        return EffectTable.of_result(result, span=self.span.width)

    @property
    def receivers(self) -> list[int]:
        return list(self.sink.receivers or [])

    @property
    def sweep_layers(self) -> list[int]:
        """Layers whose P0 components can move the sink: every layer before the last receiver."""
        return list(range(max(self.receivers)))


def by_position(sites: list[Site]) -> list[Site]:
    """``sites`` in forward order (a head or expert after its layer's earlier ones)."""
    return sorted(sites, key=lambda s: (s.order, s.unit or 0))


def clean_runs(state: DiscoveryState) -> StepResult:
    """The clean sink over the receiver layers, and the readout's clean value and span (for a
    readout other than the sink, one patched run puts every P0 component at its
    counterfactual: the floor its effects are measured against)."""
    sink, detail = state.patcher.clean_value(state.sink)
    assert detail is not None
    spec = state.config.readout
    if state.asks_sink:
        clean, floor = sink, None
    else:
        clean, _ = state.patcher.clean_value(state.metric)
        everything = all_p0_components(state.cfg, state.sweep_layers)
        floor = float(state.patcher.patch([everything], state.metric, desc="floor").values[0])
    state.clean = clean
    state.span = span_of(spec, clean, floor)
    recv = state.receivers
    state.say(f"clean sink {sink:.4f} over receiver layers {recv[0]}..{recv[-1]}")
    if floor is not None:
        state.say(f"clean {state.metric.label} {clean:.4f}, every P0 component patched {floor:.4f}")
    return CleanRuns(
        clean=CleanSink(
            sink=sink, per_receiver_layer=dict(zip(recv, detail.tolist(), strict=True))
        ),
        readout=ReadoutSpan(
            spec=spec,
            name=state.metric.name,
            label=state.metric.label,
            axis=state.metric.axis or state.metric.label,
            clean=clean,
            reference=state.span.reference,
            reference_is=state.span.reference_is,  # type: ignore[arg-type]
            definition=str(state.metric.describe().get("definition", ""))
            + (
                "; effects are (value - clean) / clean"
                if floor is None
                else "; effects are (value - clean) / (clean - floor), kept / ablated "
                "(value - floor) / (clean - floor); floor: every P0 component at its "
                "counterfactual"
            ),
        ),
        clean_sink_all_layers=state.patcher.clean_sink_per_layer(),
        sink_baseline=no_sink_baseline(state.patcher.n_pos, sink),
    )


SINK_FACTOR = 2.0
"""A sink is there when the clean sink is at least this many times the uniform-attention one."""


def no_sink_baseline(n_pos: int, clean: float) -> SinkBaseline:
    """The sink score attention with no sink would give: uniform causal attention puts 1/(q+1)
    on P0 at query q, so alpha_0 = mean over q of 1/(q+1); ``present`` when the clean sink is
    at least ``SINK_FACTOR`` times that."""
    uniform = sum(1.0 / (q + 1) for q in range(n_pos)) / n_pos
    return SinkBaseline(
        uniform_attention_sink=uniform,
        clean_over_uniform=clean / uniform,
        present=clean >= SINK_FACTOR * uniform,
        definition=f"uniform causal attention's alpha_0 = mean over q of 1/(q+1) over {n_pos} "
        f"positions; a sink is present when the clean sink is >= {SINK_FACTOR}x that",
    )


def _component_sites(state: DiscoveryState) -> list[Site]:
    kinds = ("embed", "attn") if state.cfg.attn_only else ("embed", "attn", "mlp")
    return component_sites(
        state.cfg.n_layers, state.sweep_layers, positions=P0_POSITIONS, kinds=kinds
    )


def first_pass(state: DiscoveryState) -> StepResult:
    """The first-pass estimate of every component's and head's effect at P0 (recorded as
    ``first_pass``; its ``kind`` names the method): by default the P0-stream estimate (exact on
    P0's keys, other positions clean: one one-token forward per patch), or with
    ``first_pass="attribution"`` attribution patching (one forward and one backward; ``ig_steps``
    of each with integrated gradients). Where the model does not expose what the P0-stream
    estimate reads (``EstimateUnavailable``: a TransformerLens 4 native bridge) the first pass is
    exact patching, and its ``kind`` says so. A readout that is not attention to P0 (the loss, a
    logit difference) has neither estimate: its first pass is exact patching of the components
    (no heads), which the component sweep then reuses."""
    sites = _component_sites(state) + head_sites(
        state.sweep_layers, state.cfg.n_heads, positions=P0_POSITIONS
    )
    if not isinstance(state.metric, PatternReadout):
        state.say(
            f"first pass: exact patching of the components (the estimates read attention to "
            f"P0, not the {state.metric.label})"
        )
        result = state.patcher.patch(_component_sites(state), state.metric, desc="first pass")
        state.exact_first_pass = result
    elif state.config.first_pass == "p0-stream":
        try:
            result = p0_stream_estimate(state.patcher, sites, state.metric)
        except EstimateUnavailable as why:
            state.say(f"first pass: exact patching ({why})")
            result = state.patcher.patch(sites, state.metric, desc="first pass (exact)")
    else:
        result = attribution_patch(
            state.patcher, sites, state.metric, ig_steps=state.config.ig_steps
        )
    state.first_pass_effects = dict(zip(result.names, result.effects.tolist(), strict=True))
    return FirstPass(first_pass=state.table(result))


def component_sweep(state: DiscoveryState) -> StepResult:
    """Exact patching of the embedding and the blocks up to ``first_receiver`` (always) and of the
    ``exact_top_k`` other components the first-pass estimate ranks highest (or of every one)."""
    config, comp_sites = state.config, _component_sites(state)
    if config.exact_top_k is None:
        exact_sites = comp_sites
    else:
        first = config.first_receiver_layer(state.cfg.n_layers)
        early = [s for s in comp_sites if s.kind == "embed" or s.layer <= first]
        rest = [s for s in comp_sites if s not in early]
        rest.sort(key=lambda s: -abs(state.first_pass_effects[s.name]))
        exact_sites = early + rest[: config.exact_top_k]
    if state.exact_first_pass is not None and config.exact_top_k is None:
        result = state.exact_first_pass  # the same sites, patched exactly already
    else:
        result = state.patcher.patch(exact_sites, state.metric, desc="component sweep")
    state.components = result
    assert state.span is not None
    state.relative.update(
        zip(result.names, (result.effects / state.span.width).tolist(), strict=True)
    )
    state.selected = [
        s for s in exact_sites if abs(state.relative[s.name]) >= config.component_threshold
    ]
    state.say(f"selected components: {[s.name for s in state.selected]}")
    return ComponentSweep(
        components=state.table(result),
        selected_components=[s.name for s in state.selected],
    )


def _faithfulness(state: DiscoveryState, circuit: list[Site]) -> Faithfulness:
    everything = all_p0_components(state.cfg, state.sweep_layers)
    assert state.span is not None
    return faithfulness(state.patcher, state.metric, circuit, everything, state.span)


def faithfulness_step(state: DiscoveryState) -> StepResult:
    """kept / ablated / floor of the core circuit, and where its kept sink is lost."""
    state.faith = _faithfulness(state, state.nodes)
    assert state.span is not None
    through = kept_through_layer(state.patcher, state.metric, state.faith.others, state.span)
    return FaithfulnessFound(
        faithfulness=CircuitFaithfulness(
            core_kept_through_layer=[KeptAtLayer.model_validate(row) for row in through]
        ),
        backups=BackupSearch(
            core_faithfulness=CoreFaithfulness(
                circuit=[s.name for s in state.nodes],
                kept=state.faith.kept,
                ablated=state.faith.ablated,
            )
        ),
    )


def backups(state: DiscoveryState) -> StepResult:
    """The sufficiency search (``circuits.circuit.faithfulness.find_backups``); with backups,
    the circuit's faithfulness is measured again with them."""
    assert state.faith is not None and state.span is not None
    assert state.record.faithfulness is not None and state.record.backups is not None
    through = [row.model_dump() for row in state.record.faithfulness.core_kept_through_layer]
    found, steps = find_backups(
        state.patcher,
        state.metric,
        state.faith.others,
        state.faith.kept,
        through,
        state.span,
        state.config,
    )
    state.backups = found
    if found:
        state.nodes = by_position(state.nodes + found)
        state.faith = _faithfulness(state, state.nodes)
        state.say(f"backups: {[s.name for s in found]} -> kept {state.faith.kept:.2f}")
    faith = state.faith
    search = state.record.backups.model_copy(
        update=dict(
            nodes=[s.name for s in found],
            steps=[BackupStep.model_validate(step) for step in steps],
            definition="while kept < sufficiency, try the non-circuit components of the layer "
            "where core_kept_through_layer drops most (then the next), one at a time; the one "
            "raising kept most (by >= backup_min_gain) joins the circuit (at most max_backups)",
        )
    )
    measured = dict(
        kept=faith.kept,
        ablated=faith.ablated,
        floor=faith.floor,
        kept_sites=[s.name for s in state.nodes],
        ablated_when_kept=[s.name for s in faith.others],
        values=faith.runs.values.tolist(),
        per_receiver=None if faith.runs.detail is None else faith.runs.detail.tolist(),
        definition="kept: the readout with only the circuit's P0 components clean (all other "
        "P0 components in layers before the last receiver at their counterfactual); ablated: "
        "circuit components at their counterfactual; floor: every P0 component at its "
        "counterfactual; each as (value - reference) / (clean - reference), the reference 0 for "
        "the sink (fractions of the clean sink) and the floor for other readouts (readout."
        "reference); core_kept_through_layer: the core circuit's kept value when only the "
        "other components in layers <= layer are ablated (where the kept readout is lost)",
    )
    return FaithfulnessFound.model_validate(
        dict(
            faithfulness=state.record.faithfulness.model_copy(update=measured).model_dump(),
            backups=search.model_dump(),
        )
    )


def path_patching(state: DiscoveryState) -> StepResult:
    """IOI-style paths between the circuit's nodes: into later MLP nodes' inputs (metric: the
    receivers' sink) and into the K input of every receiver layer after the sender (metric: that
    layer's own sink, the direct effect). Q paths from P0 are exactly zero and are not run. In a
    parallel block attention cannot reach its own block's MLP (``path_exists``)."""
    nodes, patcher, cfg = state.nodes, state.patcher, state.cfg
    mlp_paths = [
        (s, Receiver("mlp_in", r.layer))
        for s in nodes
        for r in nodes
        if r.kind == "mlp" and path_exists(s, Receiver("mlp_in", r.layer), cfg)
    ]
    k_paths = [
        (s, Receiver("k", r))
        for s in nodes
        for r in state.receivers
        if path_exists(s, Receiver("k", r), cfg)
    ]
    into_mlp = into_k = None
    if mlp_paths:
        into_mlp = patcher.path_patch(mlp_paths, state.metric, desc="paths into MLPs")
    if k_paths:  # sink: one forward group per receiver layer, each path read at its own layer
        k_readout = None if state.asks_sink else state.metric
        into_k = patcher.path_patch(k_paths, k_readout, desc="paths into K")
    return PathsFound(
        paths_mlp=None if into_mlp is None else state.table(into_mlp),
        paths_k=None if into_k is None else state.table(into_k),
        q_paths_note="paths from P0 into Q inputs are exactly zero (P0's query can only attend "
        "to P0) and are not run",
    )


def first_pass_agreement(state: DiscoveryState) -> StepResult:
    """Pearson r between the first-pass estimates and the exact effects measured, and the
    components' additivity: the sum of their single-patch effects over the joint effect of
    patching every P0 component (the floor run). 1: the effects add up; above 1: components
    that each remove the sink alone (AND, e.g. a head feeding the MLP that writes the massive
    activation); below 1: redundant sources (OR). Attribution patching is a first-order (or, with
    integrated gradients, a path-averaged) estimate and complete IG estimates sum to the joint
    effect, so interactions are where it disagrees with exact patching; the P0-stream estimate
    evaluates each patch on its own and misses only P0's value route."""
    exact = [r for r in (state.components, state.heads) if r is not None]
    names = [n for r in exact for n in r.names]
    exact_eff = torch.cat([r.effects for r in exact])
    if state.exact_first_pass is not None:  # the first pass was exact: nothing to compare
        agreement = Agreement(first_pass_exact_pearson=None)
    else:
        estimate = torch.tensor([state.first_pass_effects[n] for n in names])
        agreement = Agreement(first_pass_exact_pearson=pearson(estimate, exact_eff))
    if state.components is not None and state.faith is not None:
        single = float(state.components.effects.sum())
        assert state.span is not None
        joint = (state.faith.floor - 1.0) * state.span.width
        agreement.additivity = Additivity(
            sum_of_single_effects=single,
            joint_effect=joint,
            ratio=single / joint if joint != 0 else None,
            definition="sum over the exactly patched components of (sink with that component "
            "alone at its counterfactual - clean sink) / (sink with every P0 component at its "
            "counterfactual - clean sink); 1: additive, >1: components each necessary (AND), "
            "<1: redundant (OR)",
        )
    return agreement
