"""Discover the P0 Sink Circuit: a pipeline of named steps, then the graph and a verdict.

The question (``docs/science.md``): which components' outputs at position 0 make later layers
attend to P0? Every step patches P0 only, with one counterfactual (``shift`` by default: what
the first token computes when it is not first), and measures the Gu et al. sink score of the
receiver layers (default: every layer from ``first_receiver = 2`` on, Gu et al.'s Sink_0[2:]).

``STEPS`` (each ``step(state) -> StepResult``, its typed sections of the record
(``circuits.circuit.record``), in ``circuits.circuit.steps`` unless defined here):

1. ``clean_runs``: the clean sink;
2. ``first_pass``: an estimate for every component and head (the P0-stream estimate or attribution);
3. ``component_sweep``: exact patching of the embedding, attention and MLP outputs at P0;
4. ``head_sweep``, ``expert_sweep``: each head of the selected attention layers, each expert
   of the selected MoE MLPs (``circuits.circuit.unit_sweeps``);
5. ``faithfulness_step``: kept / ablated / floor of the core circuit, and where it loses the sink;
6. ``backups``: the sufficiency search for redundant components;
7. ``path_patching``: IOI-style paths between the circuit's nodes (into MLP inputs and keys);
8. ``first_pass_agreement``: Pearson r of the first pass vs the exact effects;
9. ``faithfulness_curve``: f(k) of the exact, first-pass and random rankings, CPR and CMD
   (``circuits.circuit.curve``);
10. ``prediction_effect``: the circuit's effect on the next-token loss and KL, against random
   component sets of its size (``circuits.circuit.prediction``);
11. ``graph``: the ``CircuitGraph``;
12. ``verdict``: a one-line reading of the numbers, and whether the circuit has the shape the
    paper predicts (layer-0 attention and an MLP in block 0 or 1).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxtyping import Int
from torch import Tensor

from circuits.backend import HookedModel
from circuits.circuit import steps as S
from circuits.circuit.config import DiscoverConfig
from circuits.circuit.curve import faithfulness_curve
from circuits.circuit.graph import CircuitGraph
from circuits.circuit.prediction import prediction_effect
from circuits.circuit.readout_choice import discover_readout
from circuits.circuit.record import DiscoveryRecord
from circuits.circuit.save import graph_attributes, save_discovery
from circuits.circuit.step_results import StepResult, Verdict
from circuits.circuit.unit_sweeps import expert_sweep, head_sweep
from circuits.core.arguments import NonEmpty, checked
from circuits.core.outputs import output_dir
from circuits.core.progress import status
from circuits.patching.allocator import keep_freed_memory
from circuits.patching.patcher import Patcher
from circuits.patching.readouts import SinkScore
from circuits.patching.sites import Receiver, Site

Step = Callable[[S.DiscoveryState], StepResult]


@dataclass
class Discovery:
    """Everything ``discover`` measured: ``graph`` is the circuit, ``result`` the typed record
    (``circuits.circuit.record.DiscoveryRecord``); ``record`` is its patching.json form."""

    graph: CircuitGraph
    result: DiscoveryRecord
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        """``patching.json``'s content (a new dict each time: change ``result`` instead)."""
        return self.result.to_json()

    @property
    def circuit(self) -> list[str]:
        return list(self.result.circuit or [])

    @property
    def faithfulness_kept(self) -> float | None:
        return None if self.result.faithfulness is None else self.result.faithfulness.kept

    @property
    def faithfulness_ablated(self) -> float | None:
        return None if self.result.faithfulness is None else self.result.faithfulness.ablated

    @property
    def verdict(self) -> str:
        return self.result.verdict or ""

    def save(self, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the record and the circuit's JSON / GraphML / DOT (self-describing, with a
        manifest) into ``out_dir``, all or nothing; no figures or report (``p0-circuits render
        DIR`` or ``circuits.viz.report.build_report`` draws them)."""
        with output_dir(out_dir, overwrite=overwrite) as tmp:
            save_discovery(tmp, self.result, self.graph)
        return Path(out_dir)


def _node_attrs(state: S.DiscoveryState, site: Site) -> dict[str, Any]:
    exact = {}
    for result in (state.components, state.heads, state.experts):
        if result is not None:
            exact.update(result.as_dict())
    attrs: dict[str, Any] = dict(
        CircuitGraph.from_site(site),
        effect=exact.get(site.name),
        relative=state.relative.get(site.name),
        first_pass=state.first_pass_effects.get(site.name),
        role="backup" if site in state.backups else "core",
    )
    if site.kind == "attn" and site.layer in (state.record.head_layers or {}):
        attrs["head_relative_effects"] = [
            state.relative[Site("head", site.layer, head=h).name] for h in range(state.cfg.n_heads)
        ]
    return attrs


def graph(state: S.DiscoveryState) -> CircuitGraph:
    """The circuit: its nodes, and every path whose |effect| / span passes the edge
    threshold (``mlp_in`` edges into MLP nodes, ``k`` edges into receiver layers' keys)."""
    g = CircuitGraph()
    for site in state.nodes:
        g.add_node(site.name, **_node_attrs(state, site))
    assert state.record.clean is not None
    clean_per_layer = state.record.clean.per_receiver_layer
    for table in (state.record.paths_mlp, state.record.paths_k):  # relative: ``state.table``
        if table is None:
            continue
        for row in table.effects:
            sender, receiver = row.site["name"], row.sites[1]
            rel = row.relative or 0.0
            if abs(rel) < state.config.edge_threshold:
                continue
            r = Receiver(receiver["kind"], receiver["layer"])
            target = Site("mlp", r.layer).name if r.kind == "mlp_in" else r.name
            if target not in g:
                g.add_node(
                    target, **CircuitGraph.from_receiver(r), sink_clean=clean_per_layer.get(r.layer)
                )
            g.add_edge(sender, target, path_type=r.kind, effect=row.effect, relative=rel)
    return g


def paper_shape(nodes: Sequence[Site]) -> bool:
    """Layer-0 attention (or a layer-0 head) and an MLP in block 0 or 1, at P0."""
    return any(s.layer == 0 and s.kind in ("attn", "head") for s in nodes) and any(
        s.kind == "mlp" and s.layer <= 1 for s in nodes
    )


FLOOR_CARRIES = 0.8
"""Ablating every P0 component must leave at most this share of the clean readout for P0's
components to carry it at all (below: a circuit can be faithful)."""


def circuit_quality(kept: float, ablated: float, floor: float) -> str:
    """faithful / partial / weak, from the numbers the verdict quotes (``docs/science.md``):
    ``none`` when P0's components do not carry the readout (every one ablated leaves more than
    ``FLOOR_CARRIES`` of it) or ablating the circuit does not lower it (ablated >= 1)."""
    if floor > FLOOR_CARRIES or ablated >= 1.0:
        return "none"
    if kept >= 0.8 and ablated <= max(0.5, floor + 0.2):
        return "faithful"
    if kept >= 0.5 or ablated <= 0.5:
        return "partial"
    return "weak"


def percent(share: float) -> str:
    """``share`` as a whole percentage, without a "-0%"."""
    return f"{0.0 if abs(share) < 0.005 else share:.0%}"


def verdict(state: S.DiscoveryState) -> StepResult:
    """One line: faithful / partial / weak, the numbers, and the shape against the paper's
    (compared only where the question is the sink, there is one, and a circuit carries it)."""
    assert state.faith is not None
    names = [s.name for s in state.nodes]
    kept, ablated, floor = state.faith.kept, state.faith.ablated, state.faith.floor
    shape = paper_shape(state.nodes)
    base = state.record.sink_baseline
    asks_sink = state.asks_sink
    sink = base is None or base.present
    no_sink = (
        ""
        if base is None or sink or not asks_sink
        else (
            f"no sink to explain (clean sink {state.clean:.3f}, {base.clean_over_uniform:.2f}x the "
            f"{base.uniform_attention_sink:.3f} of uniform attention): "
        )
    )
    what = "the sink" if asks_sink else f"the {state.metric.label}"
    if not names:
        return Verdict(
            circuit=names,
            paper_prediction_shape=shape,
            verdict=no_sink + f"no circuit: no single P0 component moves {what} by the threshold",
        )
    circuit = ", ".join(names)
    if state.backups:
        assert state.record.backups is not None
        core_kept = state.record.backups.core_faithfulness.kept
        circuit += (
            f" (backups found by the sufficiency search: {', '.join(s.name for s in state.backups)};"
            f" the core alone keeps {core_kept:.0%})"
        )
    quality = circuit_quality(kept, ablated, floor)
    span = state.span
    assert span is not None
    share = (
        "of the clean sink"
        if asks_sink
        else f"of P0's effect on {what} ({span.clean:.4g} clean, {span.reference:.4g} with every "
        "P0 component at its counterfactual)"
    )
    numbers = (
        f"keeping only it keeps {percent(kept)} {share}, ablating it leaves {percent(ablated)} "
        f"(all P0 components ablated: {percent(floor)})"
    )
    if quality == "none":
        why = (
            f"ablating it does not {'lower' if asks_sink else 'move'} {what}"
            if ablated >= 1.0
            else f"P0's components do not carry {what}"
        )
        return Verdict(
            circuit=names,
            paper_prediction_shape=shape,
            verdict=no_sink + f"no circuit carries {what}: {{{circuit}}}: {numbers}; {why}",
        )
    if not asks_sink:
        match = f"a circuit for {what}, not compared with the paper's (a sink circuit)"
    elif sink:
        match = ("matches" if shape else "differs from") + " the paper's prediction"
    else:
        match = "not compared with the paper's prediction (no sink)"
    tail = "" if not asks_sink else " (layer-0 attention + an early MLP at P0; docs/science.md)"
    return Verdict(
        circuit=names,
        paper_prediction_shape=shape,
        verdict=no_sink + f"{quality} circuit {{{circuit}}}: {numbers}; {match}{tail}",
    )


STEPS: tuple[Step, ...] = (
    S.clean_runs,
    S.first_pass,
    S.component_sweep,
    head_sweep,
    expert_sweep,
    S.faithfulness_step,
    S.backups,
    S.path_patching,
    S.first_pass_agreement,
    faithfulness_curve,
    prediction_effect,
    verdict,
)
"""The pipeline, in order (the graph is built from the state after the last step)."""


def starts_with_bos(model: HookedModel, tokens: Tensor) -> bool | None:
    """Whether position 0 holds the tokenizer's BOS token: True in every prompt, False in none,
    None when the prompts disagree or the model has no tokenizer with a BOS id."""
    bos_id = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    if bos_id is None:
        return None
    at_p0 = (tokens[:, 0] == int(bos_id)).tolist()
    return True if all(at_p0) else False if not any(at_p0) else None


@checked
def discover(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    config: DiscoverConfig | None = None,
    *,
    model_name: str = "model",
    str_tokens: NonEmpty[list[str]] | None = None,
    steps: NonEmpty[Step] = STEPS,
) -> Discovery:
    """Run the pipeline on ``tokens`` (``[n_prompts, n_tokens]``, P0 = each row's first token)."""
    config = config or DiscoverConfig()
    keep_freed_memory()  # many stacked forwards: reuse their buffers (allocator docstring)
    config.check()
    sink = SinkScore(config.receiver_layers(model.cfg.n_layers))
    metric = discover_readout(config.readout, model, sink)
    patcher = Patcher(
        model,
        tokens,
        config.counterfactual,
        shift_token=config.shift_token,
        max_rows=config.max_rows,
        progress=config.progress,
    )
    record = DiscoveryRecord(
        model=model_name,
        dtype=str(model.cfg.dtype).removeprefix("torch."),
        counterfactual=patcher.counterfactual.spec,
        counterfactual_definition=patcher.counterfactual.definition,
        metric=metric.describe(),
        receiver_layers=list(sink.receivers or []),
        positions_patched=[0],
        n_prompts=int(tokens.shape[0]),
        n_tokens=int(tokens.shape[1]),
        tokens=tokens.tolist(),
        str_tokens=None if str_tokens is None else [list(row) for row in str_tokens],
        bos=starts_with_bos(model, tokens),
        config=config.to_dict(),
        block_structure="parallel" if model.cfg.parallel_attn_mlp else "sequential",
        model_shape={
            "n_layers": model.cfg.n_layers,
            "n_heads": model.cfg.n_heads,
            "d_model": model.cfg.d_model,
        },
    )
    say = status if config.progress else (lambda *a, **k: None)
    state = S.DiscoveryState(patcher, config, metric, sink, record, say)
    timings: dict[str, float] = {}
    for step in steps:
        start = time.perf_counter()
        record.update(step(state))
        timings[step.__name__.removesuffix("_step")] = round(time.perf_counter() - start, 3)
    record.timings_s = timings
    g = graph(state)
    g.g.graph.update(
        model=model_name,
        counterfactual=patcher.counterfactual.spec,
        metric=metric.name,
        receiver_layers=record.receiver_layers,
        position=0,
        n_prompts=record.n_prompts,
        n_tokens=record.n_tokens,
        parallel_attn_mlp=bool(model.cfg.parallel_attn_mlp),
    )
    g.g.graph.update({k: v for k, v in graph_attributes(record).items() if v is not None})
    return Discovery(g, record, timings)
