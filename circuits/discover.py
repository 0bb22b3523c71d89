"""Discover the P0 Sink Circuit: component sweep -> head sweep -> path patching -> graph -> verdict.

The question (PAPER.md): which components' outputs at position 0 make later layers attend to
P0? Every step patches P0 only, with one counterfactual (``shift`` by default: what the first
token computes when it is not first), and measures the Gu et al. sink score of the receiver
layers (default: every layer from ``first_receiver = 2`` on, Gu et al.'s Sink_0[2:]).

1. **Attribution pass** (one forward + one backward): a linear estimate for the embedding,
   every attention layer, every MLP and every head at P0.
2. **Component sweep** (exact patching): the embedding, each attention layer's output and each
   MLP's output at P0, in every layer before the last receiver. A component is *selected* when
   patching it moves the sink by at least ``component_threshold`` of the clean value.
3. **Head sweep** in the selected attention layers: each head's output (``hook_z``) at P0. The
   selected heads replace the layer's node when patched together they carry at least
   ``head_cover`` of the layer's effect; otherwise the whole layer stays one node.
4. **Faithfulness**: the sink with only the circuit's P0 components kept (every other P0
   component in layers before the last receiver -- the embedding, every other head, every
   other MLP -- set to its counterfactual) and with the circuit's components set to their
   counterfactual, each as a fraction of the clean sink. ``floor``: every P0 component patched.
   ``kept_through_layer``: the kept value when only the other components up to layer L are
   ablated, which locates where a circuit that is not sufficient loses the sink.
5. **Backups** (redundancy): a component can be needed only when its partners are gone -- two
   sources either of which suffices each move the sink by little alone, so step 2 misses them.
   While ``kept < sufficiency``, the non-circuit components of the layer where
   ``kept_through_layer`` drops most (then the next) are tried one at a time, and the one that
   raises ``kept`` most (by at least ``backup_min_gain``) joins the circuit as a *backup* node
   (at most ``max_backups``). The core circuit's own faithfulness stays in the record.
6. **Path patching** (IOI style) between the circuit's nodes: sender -> a later MLP node's input
   (path type ``mlp``, metric: the receivers' sink), and sender -> the K input of every receiver
   layer after it (path type ``k``, metric: that layer's own sink; the direct effect). Q paths
   from P0 are exactly zero (P0's query attends only to P0), so none are run.
7. **Verdict**: a one-line reading of the numbers, and whether the circuit has the shape
   PAPER.md predicts (layer-0 attention and an MLP in block 0 or 1).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuits.attribution import attribution_patch, pearson
from circuits.counterfactuals import COUNTERFACTUALS, check_counterfactual
from circuits.errors import UsageError
from circuits.graph import CircuitGraph
from circuits.metrics import measure_sinks
from circuits.patching import (
    Patcher,
    PatchingResult,
    Receiver,
    SinkMetric,
    Site,
    component_sites,
    head_sites,
)


@dataclass
class DiscoverConfig:
    """Knobs of the pipeline (defaults are what ``p0-circuits discover`` uses)."""

    counterfactual: str = "shift"
    receivers: Sequence[int] | None = None
    """Receiver layers of the sink metric (default: ``first_receiver`` .. last layer)."""
    first_receiver: int = 2
    component_threshold: float = 0.05
    """|effect| / clean sink needed to select a component (or a head)."""
    head_threshold: float = 0.05
    head_cover: float = 0.8
    edge_threshold: float = 0.02
    """|effect| / clean sink (of the path's metric) needed to draw an edge."""
    sufficiency: float = 0.8
    """kept fraction at which the backup search stops."""
    max_backups: int = 3
    backup_min_gain: float = 0.05
    exact_top_k: int | None = 8
    """k: exact patching for the embedding, the blocks up to ``first_receiver`` and the k other
    components with the largest attribution estimate; None: exact patching of every component."""
    shift_token: int | None = None
    max_rows: int = 64
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["receivers"] = None if self.receivers is None else list(self.receivers)
        return d


@dataclass
class Discovery:
    """Everything ``discover`` measured; ``graph`` is the circuit, ``record`` is patching.json."""

    graph: CircuitGraph
    record: dict[str, Any]
    circuit: list[str]
    faithfulness_kept: float
    faithfulness_ablated: float
    verdict: str
    timings: dict[str, float] = field(default_factory=dict)


def _receivers(model: HookedTransformer, config: DiscoverConfig) -> list[int]:
    n = model.cfg.n_layers
    if config.receivers is not None:
        layers = sorted({int(r) for r in config.receivers})
    else:
        first = min(config.first_receiver, n - 1)
        layers = list(range(max(first, 1), n)) if n > 1 else [0]
    bad = [r for r in layers if not 0 <= r < n]
    if bad or not layers:
        raise UsageError(f"receiver layers {bad or layers} out of range: the model has layers 0..{n - 1}")
    if max(layers) == 0:
        raise UsageError("receiver layers must include a layer >= 1 (layer 0 cannot be moved by P0 components)")
    return layers


def check_config(config: DiscoverConfig) -> None:
    check_counterfactual(config.counterfactual)
    for name in ("component_threshold", "head_threshold", "edge_threshold"):
        v = getattr(config, name)
        if not 0.0 <= v < 1.0:
            raise UsageError(f"{name} must lie in [0, 1), got {v}")
    if not 0.0 < config.head_cover <= 1.0:
        raise UsageError(f"head_cover must lie in (0, 1], got {config.head_cover}")
    if not 0.0 < config.sufficiency <= 1.0:
        raise UsageError(f"sufficiency must lie in (0, 1], got {config.sufficiency}")
    if config.max_backups < 0:
        raise UsageError("max_backups must be >= 0")
    if config.exact_top_k is not None and config.exact_top_k < 0:
        raise UsageError("exact_top_k must be >= 0")


def discover(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    config: DiscoverConfig | None = None,
    *,
    model_name: str = "model",
    str_tokens: list[list[str]] | None = None,
) -> Discovery:
    """Run the whole pipeline on ``tokens`` (``[n_prompts, n_tokens]``, P0 = each row's first token)."""
    config = config or DiscoverConfig()
    check_config(config)
    cfg = model.cfg
    receivers = _receivers(model, config)
    last_receiver = max(receivers)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        t0 = now

    patcher = Patcher(
        model, tokens, config.counterfactual, shift_token=config.shift_token,
        max_rows=config.max_rows, progress=config.progress,
    )
    metric = SinkMetric(receivers)
    clean, clean_detail = patcher.clean_value(metric)
    if clean <= 0:
        raise UsageError("the clean sink score is zero: nothing to explain")
    clean_per_layer = {r: float(v) for r, v in zip(receivers, clean_detail.tolist(), strict=True)}
    lap("clean_runs")
    say = print if config.progress else (lambda *a, **k: None)
    say(f"clean sink {clean:.4f} over receiver layers {receivers[0]}..{receivers[-1]}")

    sweep_layers = list(range(last_receiver))
    comp_sites = component_sites(cfg.n_layers, sweep_layers, kinds=("embed", "attn") if cfg.attn_only else ("embed", "attn", "mlp"))
    all_heads = head_sites(sweep_layers, cfg.n_heads)

    # 1. attribution pass over components and heads
    attribution = attribution_patch(patcher, comp_sites + all_heads, metric)
    attr_effect = dict(zip(attribution.names, attribution.effects.tolist(), strict=True))
    lap("attribution")

    # 2. exact component sweep
    if config.exact_top_k is None:
        exact_sites = comp_sites
    else:
        early = [s for s in comp_sites if s.kind == "embed" or s.layer <= config.first_receiver]
        rest = [s for s in comp_sites if s not in early]
        rest.sort(key=lambda s: -abs(attr_effect[s.name]))
        exact_sites = early + rest[: config.exact_top_k]
    components = patcher.patch(exact_sites, metric, desc="component sweep")
    comp_rel = dict(zip(components.names, (components.effects / clean).tolist(), strict=True))
    selected = [s for s in exact_sites if abs(comp_rel[s.name]) >= config.component_threshold]
    lap("component_sweep")
    say(f"selected components: {[s.name for s in selected]} ({timings})")

    # 3. head sweep where it matters
    head_layers = sorted({s.layer for s in selected if s.kind == "attn"})
    heads = None
    head_rel: dict[str, float] = {}
    joint: dict[int, dict[str, Any]] = {}
    nodes: list[Site] = [s for s in selected if s.kind != "attn"]
    if head_layers:
        heads = patcher.patch(head_sites(head_layers, cfg.n_heads), metric, desc="head sweep")
        head_rel = dict(zip(heads.names, (heads.effects / clean).tolist(), strict=True))
        picks = {
            layer: [Site("head", layer, head=h) for h in range(cfg.n_heads)
                    if abs(head_rel[Site("head", layer, head=h).name]) >= config.head_threshold]
            for layer in head_layers
        }
        joint_patches = [picks[layer] for layer in head_layers if picks[layer]]
        joint_res = patcher.patch(joint_patches, metric, desc="joint heads") if joint_patches else None
        k = 0
        for layer in head_layers:
            layer_rel = comp_rel[Site("attn", layer).name]
            if picks[layer]:
                rel = float(joint_res.effects[k] / clean)
                k += 1
            else:
                rel = 0.0
            cover = rel / layer_rel if layer_rel else 0.0
            use_heads = bool(picks[layer]) and cover >= config.head_cover
            joint[layer] = {
                "heads": [s.head for s in picks[layer]],
                "joint_relative": rel,
                "layer_relative": layer_rel,
                "cover": cover,
                "node": "heads" if use_heads else "layer",
            }
            nodes.extend(picks[layer] if use_heads else [Site("attn", layer)])
    nodes.sort(key=lambda s: (s.order, s.head or 0))
    lap("head_sweep")
    say(f"circuit nodes: {[s.name for s in nodes]}")

    # 4. faithfulness
    everything = _all_p0_components(cfg, sweep_layers)
    core = list(nodes)
    kept, ablated, floor, others, faith = _faithfulness(patcher, metric, core, everything, cfg.n_heads, clean)
    kept_through = _kept_through_layer(patcher, metric, others, clean)
    core_faith = {"circuit": [s.name for s in core], "kept": kept, "ablated": ablated}
    lap("faithfulness")

    # 5. backups: components needed only when their redundant partners are ablated
    backups, backup_steps = _find_backups(patcher, metric, others, kept, kept_through, clean, config)
    if backups:
        nodes = sorted(core + backups, key=lambda s: (s.order, s.head or 0))
        kept, ablated, floor, others, faith = _faithfulness(patcher, metric, nodes, everything, cfg.n_heads, clean)
        say(f"backups: {[s.name for s in backups]} -> kept {kept:.2f}")
    circuit_sites = list(nodes)
    lap("backups")

    # 6. path patching between the circuit's nodes (core and backups)
    mlp_paths = [
        (s, Receiver("mlp", r.layer))
        for s in nodes for r in nodes
        if r.kind == "mlp" and Receiver("mlp", r.layer).order > s.order
    ]
    k_paths = [
        (s, Receiver("k", r))
        for s in nodes for r in receivers
        if Receiver("k", r).order > s.order
    ]
    path_mlp = patcher.path_patch(mlp_paths, metric, desc="paths into MLPs") if mlp_paths else None
    path_k = None
    if k_paths:
        # one forward group per receiver layer; each path read at its own layer (direct effect)
        path_k = patcher.path_patch(k_paths, None, desc="paths into K")
    lap("path_patching")

    # attribution vs exact
    exact_names = components.names + (heads.names if heads is not None else [])
    exact_eff = torch.cat([components.effects] + ([heads.effects] if heads is not None else []))
    attr_vec = torch.tensor([attr_effect[n] for n in exact_names])
    corr = pearson(attr_vec, exact_eff)

    # 7. graph and verdict
    graph = _build_graph(
        nodes, components, heads, attr_effect, comp_rel, head_rel, path_mlp, path_k,
        clean, clean_per_layer, config, joint, cfg.n_heads, {s.name for s in backups},
    )
    names = [s.name for s in nodes]
    backup_names = [s.name for s in backups]
    paper_shape = any(s.layer == 0 and s.kind in ("attn", "head") for s in nodes) and any(
        s.kind == "mlp" and s.layer <= 1 for s in nodes
    )
    verdict = _verdict(names, kept, ablated, floor, paper_shape, backup_names, core_faith["kept"])
    graph.g.graph.update(
        model=model_name,
        counterfactual=config.counterfactual,
        counterfactual_definition=COUNTERFACTUALS[config.counterfactual],
        metric=metric.describe(),
        receiver_layers=receivers,
        position=0,
        clean_sink=clean,
        circuit=names,
        backups=backup_names,
        faithfulness_kept=kept,
        faithfulness_ablated=ablated,
        faithfulness_floor=floor,
        attribution_exact_pearson=corr,
        paper_prediction_shape=paper_shape,
        verdict=verdict,
    )
    record = {
        "model": model_name,
        "counterfactual": config.counterfactual,
        "counterfactual_definition": COUNTERFACTUALS[config.counterfactual],
        "metric": metric.describe(),
        "receiver_layers": receivers,
        "positions_patched": [0],
        "n_prompts": int(tokens.shape[0]),
        "n_tokens": int(tokens.shape[1]),
        "tokens": tokens.tolist(),
        "str_tokens": str_tokens,
        "config": config.to_dict(),
        "clean": {"sink": clean, "per_receiver_layer": clean_per_layer},
        "attribution": attribution.to_dict(),
        "attribution_exact_pearson": corr,
        "components": components.to_dict(),
        "selected_components": [s.name for s in selected],
        "heads": None if heads is None else heads.to_dict(),
        "head_layers": {str(k): v for k, v in joint.items()},
        "paths_mlp": None if path_mlp is None else path_mlp.to_dict(),
        "paths_k": None if path_k is None else path_k.to_dict(),
        "q_paths_note": "paths from P0 into Q inputs are exactly zero (P0's query can only attend to P0) and are not run",
        "circuit": names,
        "backups": {
            "nodes": backup_names,
            "core_faithfulness": core_faith,
            "core_kept_through_layer": kept_through,
            "steps": backup_steps,
            "definition": "while kept < sufficiency, try the non-circuit components of the layer where "
            "core_kept_through_layer drops most (then the next), one at a time; the one raising kept most "
            "(by >= backup_min_gain) joins the circuit (at most max_backups)",
        },
        "faithfulness": {
            "kept": kept,
            "ablated": ablated,
            "floor": floor,
            "kept_sites": [s.name for s in circuit_sites],
            "ablated_when_kept": [s.name for s in others],
            "values": faith.values.tolist(),
            "core_kept_through_layer": kept_through,
            "per_receiver": None if faith.detail is None else faith.detail.tolist(),
            "definition": "sink with only the circuit's P0 components clean (all other P0 components "
            "in layers before the last receiver at their counterfactual) / clean sink; ablated: "
            "circuit components at their counterfactual / clean sink; floor: every P0 component "
            "at its counterfactual / clean sink; core_kept_through_layer: the core circuit's kept value "
            "when only the other components in layers <= layer are ablated (where the kept sink is lost)",
        },
        "verdict": verdict,
        "paper_prediction_shape": paper_shape,
        "timings_s": timings,
    }
    return Discovery(graph, record, names, kept, ablated, verdict, timings)


def _faithfulness(
    patcher: Patcher, metric: SinkMetric, circuit: list[Site], everything: list[Site], n_heads: int, clean: float
) -> tuple[float, float, float, list[Site], PatchingResult]:
    """(kept, ablated, floor, the other P0 components, the three patched runs): the sink with
    every non-circuit P0 component ablated, with the circuit ablated, and with everything
    ablated, each / the clean sink. In a layer where the circuit keeps some heads, the layer's
    other heads are the "other" components."""
    circuit_keys = {(s.kind, s.layer, s.head) for s in circuit}
    head_layers = {s.layer for s in circuit if s.kind == "head"}
    others: list[Site] = []
    for s in everything:
        if (s.kind, s.layer, s.head) in circuit_keys:
            continue
        if s.kind == "attn" and s.layer in head_layers:
            others.extend(Site("head", s.layer, head=h) for h in range(n_heads) if ("head", s.layer, h) not in circuit_keys)
            continue
        others.append(s)
    patches = [others or [Site("embed")], circuit or [Site("embed")], everything]
    faith = patcher.patch(patches, metric, desc="faithfulness")
    kept = float(faith.values[0]) / clean if others else 1.0
    ablated = float(faith.values[1]) / clean if circuit else 1.0
    return kept, ablated, float(faith.values[2]) / clean, others, faith


def _find_backups(
    patcher: Patcher,
    metric: SinkMetric,
    others: list[Site],
    kept: float,
    kept_through: list[dict[str, float]],
    clean: float,
    config: DiscoverConfig,
) -> tuple[list[Site], list[dict[str, Any]]]:
    """Greedy sufficiency search (module docstring, step 5). Returns the backups in the order
    found and one record per step (layer tried, each candidate's kept, the choice)."""
    backups: list[Site] = []
    steps: list[dict[str, Any]] = []
    if kept >= config.sufficiency or not kept_through or config.max_backups == 0:
        return backups, steps
    drops = []
    prev = 1.0  # nothing ablated: the clean sink
    for row in kept_through:
        drops.append((prev - row["kept"], row["layer"]))
        prev = row["kept"]
    first_layer = kept_through[0]["layer"]
    for _, layer in sorted(drops, key=lambda d: -d[0]):
        if kept >= config.sufficiency or len(backups) >= config.max_backups:
            break
        candidates = [
            s for s in others
            if s not in backups and (s.layer == layer if s.kind != "embed" else layer == first_layer)
        ]
        if not candidates:
            continue
        rest = [s for s in others if s not in backups]
        patches = [[s for s in rest if s != c] or [Site("embed")] for c in candidates]
        res = patcher.patch(patches, metric, desc=f"backups in layer {layer}")
        tried = {c.name: float(v) / clean for c, v in zip(candidates, res.values.tolist(), strict=True)}
        best = max(candidates, key=lambda c: tried[c.name])
        gain = tried[best.name] - kept
        chosen = gain >= config.backup_min_gain
        steps.append({"layer": layer, "kept_before": kept, "candidates": tried,
                      "chosen": best.name if chosen else None})
        if chosen:
            backups.append(best)
            kept = tried[best.name]
    return backups, steps


def _kept_through_layer(
    patcher: Patcher, metric: SinkMetric, others: list[Site], clean: float
) -> list[dict[str, float]]:
    """Where the kept sink is lost: the sink, as a fraction of clean, with the circuit kept and
    only the non-circuit P0 components of layers <= L ablated (the embedding counts as below
    layer 0), for every layer L that has one (the last value is ``kept`` itself)."""
    cuts = sorted({s.layer for s in others if s.kind != "embed"})
    patches = [[s for s in others if s.kind == "embed" or s.layer <= cut] for cut in cuts]
    res = patcher.patch(patches, metric, desc="faithfulness by layer")
    return [{"layer": cut, "kept": float(v) / clean} for cut, v in zip(cuts, res.values.tolist(), strict=True)]


def _all_p0_components(cfg, layers: Sequence[int]) -> list[Site]:
    kinds = ("embed", "attn") if cfg.attn_only else ("embed", "attn", "mlp")
    return component_sites(cfg.n_layers, layers, kinds=kinds)


def _verdict(
    names: list[str], kept: float, ablated: float, floor: float, paper_shape: bool,
    backups: Sequence[str] = (), core_kept: float | None = None,
) -> str:
    if not names:
        return "no circuit: no single P0 component moves the sink by the threshold"
    circuit = ", ".join(names)
    if backups:
        circuit += f" (backups found by the sufficiency search: {', '.join(backups)}; the core alone keeps {core_kept:.0%})"
    if kept >= 0.8 and ablated <= max(0.5, floor + 0.2):
        quality = "faithful"
    elif kept >= 0.5 or ablated <= 0.5:
        quality = "partial"
    else:
        quality = "weak"
    shape = (
        "matches PAPER.md's prediction (layer-0 attention + an early MLP at P0)"
        if paper_shape else "differs from PAPER.md's prediction (layer-0 attention + an early MLP at P0)"
    )
    return (
        f"{quality} circuit {{{circuit}}}: keeping only it keeps {kept:.0%} of the clean sink, "
        f"ablating it leaves {ablated:.0%} (all P0 components ablated: {floor:.0%}); {shape}"
    )


def _build_graph(
    nodes, components, heads, attr_effect, comp_rel, head_rel, path_mlp, path_k,
    clean, clean_per_layer, config, joint, n_heads, backups=frozenset(),
) -> CircuitGraph:
    g = CircuitGraph()
    comp_eff = components.as_dict()
    head_eff = heads.as_dict() if heads is not None else {}
    for s in nodes:
        eff = comp_eff.get(s.name, head_eff.get(s.name))
        rel = comp_rel.get(s.name, head_rel.get(s.name))
        extra: dict[str, Any] = {}
        if s.kind == "attn" and s.layer in joint:
            extra["head_relative_effects"] = [
                head_rel[Site("head", s.layer, head=h).name] for h in range(n_heads)
            ]
        g.add_node(
            s.name, **CircuitGraph.from_site(s), effect=eff, relative=rel,
            attribution=attr_effect.get(s.name), role="backup" if s.name in backups else "core", **extra,
        )
    if path_mlp is not None:
        for row in path_mlp.to_dict()["effects"]:
            sender, receiver = row["sites"][0]["name"], row["sites"][1]
            rel = row["relative"] or 0.0
            if abs(rel) >= config.edge_threshold:
                target = Site("mlp", receiver["layer"]).name
                g.add_edge(sender, target, path_type="mlp", effect=row["effect"], relative=rel)
    if path_k is not None:
        for row in path_k.to_dict()["effects"]:
            sender, receiver = row["sites"][0]["name"], row["sites"][1]
            effect, rel = row["effect"], row["relative"] or 0.0
            if abs(rel) >= config.edge_threshold:
                r = Receiver("k", receiver["layer"])
                if r.name not in g:
                    g.add_node(r.name, **CircuitGraph.from_receiver(r), sink_clean=clean_per_layer.get(r.layer))
                g.add_edge(sender, r.name, path_type="k", effect=effect, relative=rel)
    return g


def clean_sink_per_layer(model: HookedTransformer, tokens: Tensor) -> list[float]:
    """Mean sink score of every layer on the clean run (for figures)."""
    return measure_sinks(model, tokens, bos=False).column("sink_score")


__all__ = ["DiscoverConfig", "Discovery", "discover", "PatchingResult"]
