"""``measure_sinks(model, tokens)``: one forward pass with hooks that reduce each layer's
activations on the fly (nothing of size ``pos x pos`` is kept), returning a ``SinkReport``
whose ``to_dict()`` is the ``sink_metrics.json`` schema documented in docs/measure.md.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits.backend import HookedModel, get_act_name, learned_attention_sinks
from circuits.core.arguments import Count, Fraction, Positive, checked
from circuits.core.conventions import (
    DEFAULT_EPS,
    MASSIVE_RATIO_THRESHOLD,
    NORM_RATIO_SINK_THRESHOLD,
)
from circuits.core.errors import UsageError
from circuits.core.model_lock import exclusive
from circuits.metrics.attention import (
    attn_to_p0,
    check_pattern,
    sink_rate,
    sink_score,
    sum_p_squared,
)
from circuits.metrics.residual import (
    MassiveActivation,
    NormGrowth,
    check_finite,
    massive_activations,
    norm_growth,
    p0_direction_cosine,
    position_norms,
    processed_residual_note,
    residual_norms,
)
from circuits.metrics.routing import routing_hooks
from circuits.prompts import check_tokens


@dataclass
class HeadMetrics:
    head: int
    attn_to_p0: float
    sink_score: float


@dataclass
class LayerMetrics:
    layer: int
    attn_to_p0: float
    sink_score: float
    sink_rate: float
    p0_norm: float
    rest_norm_median: float
    p0_norm_ratio: float
    p0_cosine: float | None
    heads: list[HeadMetrics]


@dataclass
class SinkReport:
    """Everything ``measure_sinks`` measured; ``to_dict()`` is the sink_metrics.json schema."""

    n_tokens: int
    batch_size: int
    bos: bool
    eps: float
    layers: list[LayerMetrics]
    embed_p0_norm: float
    embed_rest_norm_median: float
    massive_activations: list[MassiveActivation]
    layer0_sum_p_squared: list[float]
    layer0_attn_out_norm: list[float]
    massive_ratio: float = MASSIVE_RATIO_THRESHOLD
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sink_rate_from_layer2(self) -> float | None:
        """Gu et al.'s Sink^eps_0[2:]: the share of heads in layers >= 2 above eps (None if the
        model has fewer than 3 layers)."""
        scores = [h.sink_score for layer in self.layers[2:] for h in layer.heads]
        if not scores:
            return None
        return sum(s > self.eps for s in scores) / len(scores)

    @property
    def sink_rate_all(self) -> float:
        scores = [h.sink_score for layer in self.layers for h in layer.heads]
        return sum(s > self.eps for s in scores) / len(scores)

    @property
    def first_layer_norm_ratio_over_10(self) -> int | None:
        """First layer whose P0/rest norm ratio exceeds 10 (None if none does): where P0 is
        unmistakably the largest vector, not where its norm jumps (``norm_growth``)."""
        for layer in self.layers:
            if layer.p0_norm_ratio > NORM_RATIO_SINK_THRESHOLD:
                return layer.layer
        return None

    @property
    def norm_growth(self) -> NormGrowth:
        """Where P0's norm outgrows the rest: per block, within blocks 0-1, the largest jump."""
        embed = self.embed_p0_norm / max(self.embed_rest_norm_median, 1e-12)
        return norm_growth([embed, *self.column("p0_norm_ratio")])

    def column(self, key: str) -> list[float]:
        """One per-layer metric as a list, e.g. ``report.column("attn_to_p0")``."""
        return [getattr(layer, key) for layer in self.layers]

    def to_dict(self) -> dict[str, Any]:
        growth = self.norm_growth
        return {
            "n_tokens": self.n_tokens,
            "batch_size": self.batch_size,
            "bos": self.bos,
            "eps": self.eps,
            "sink_rate_all_layers": self.sink_rate_all,
            "sink_rate_from_layer2": self.sink_rate_from_layer2,
            "first_layer_norm_ratio_over_10": self.first_layer_norm_ratio_over_10,
            "p0_norm_growth_first_two_blocks": growth.first_two_blocks,
            "norm_growth_share_l01": growth.share_l01,
            "largest_norm_jump_layer": growth.largest_jump_layer,
            "embed": {
                "p0_norm": self.embed_p0_norm,
                "rest_norm_median": self.embed_rest_norm_median,
            },
            "layers": [
                {**asdict(layer), "p0_norm_growth": g}
                for layer, g in zip(self.layers, growth.growth, strict=True)
            ],
            "recognition": {
                "layer0_sum_p_squared": self.layer0_sum_p_squared,
                "layer0_attn_out_norm": self.layer0_attn_out_norm,
            },
            "massive_ratio_threshold": self.massive_ratio,
            "massive_activations": [asdict(m) for m in self.massive_activations],
            **self.extra,
        }


class _Reducer:
    """Forward hooks that reduce each layer's pattern and residual stream as they are produced."""

    def __init__(self, n_layers: int, massive_ratio: float, sinks: bool = False) -> None:
        self.sinks = sinks
        self.per_layer: dict[int, dict[str, Any]] = {layer: {} for layer in range(n_layers)}
        self.massive: list[MassiveActivation] = []
        self.recognition: dict[str, list[float]] = {}
        self.embed: tuple[float, float] = (0.0, 0.0)
        self.massive_ratio = massive_ratio
        self.n_layers = n_layers

    def on_pattern(self, pattern: Tensor, hook) -> None:
        check_pattern(pattern, hook.name, sinks=self.sinks)
        layer = hook.layer()
        self.per_layer[layer]["attn_to_p0"] = attn_to_p0(pattern)
        self.per_layer[layer]["sink_score"] = sink_score(pattern)
        if layer == 0:
            self.recognition["sum_p_squared"] = sum_p_squared(pattern).mean(dim=0).tolist()

    def on_resid_post(self, resid: Tensor, hook) -> None:
        check_finite(resid, hook.name)
        layer = hook.layer()
        self.per_layer[layer]["norms"] = residual_norms(resid)
        self.per_layer[layer]["cosine"] = p0_direction_cosine(resid)
        self.massive.extend(massive_activations(resid, layer, ratio_threshold=self.massive_ratio))

    def on_embed(self, resid: Tensor, hook) -> None:
        check_finite(resid, hook.name)
        self.embed = residual_norms(resid)

    def on_attn_out0(self, attn_out: Tensor, hook) -> None:
        self.recognition["attn_out_norm"] = position_norms(attn_out).tolist()

    def hooks(self) -> list[tuple[str, Any]]:
        hooks = [
            (get_act_name("resid_pre", 0), self.on_embed),
            (get_act_name("attn_out", 0), self.on_attn_out0),
        ]
        for layer in range(self.n_layers):
            hooks.append((get_act_name("pattern", layer), self.on_pattern))
            hooks.append((get_act_name("resid_post", layer), self.on_resid_post))
        return hooks

    def layer_metrics(self, eps: float) -> list[LayerMetrics]:
        layers = []
        for layer in range(self.n_layers):
            stats = self.per_layer[layer]
            p0_norm, rest = stats["norms"]
            per_head = zip(stats["attn_to_p0"].tolist(), stats["sink_score"].tolist(), strict=True)
            layers.append(
                LayerMetrics(
                    layer=layer,
                    attn_to_p0=stats["attn_to_p0"].mean().item(),
                    sink_score=stats["sink_score"].mean().item(),
                    sink_rate=sink_rate(stats["sink_score"], eps),
                    p0_norm=p0_norm,
                    rest_norm_median=rest,
                    p0_norm_ratio=p0_norm / max(rest, 1e-12),
                    p0_cosine=stats["cosine"],
                    heads=[HeadMetrics(h, a, s) for h, (a, s) in enumerate(per_head)],
                )
            )
        return layers


@checked
def measure_sinks(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    *,
    bos: bool,
    eps: Fraction = DEFAULT_EPS,
    max_massive: Count = 200,
    massive_ratio: Positive = MASSIVE_RATIO_THRESHOLD,
    progress: bool = False,
) -> SinkReport:
    """Run ``model`` once on ``tokens`` and measure the P0 sink in every layer.

    ``bos`` only records whether ``tokens`` start with a BOS token (the caller tokenized them);
    nothing is prepended here. Hooks reduce every activation as soon as it is produced, so the
    memory cost is one layer's pattern at a time.
    """
    tokens = check_tokens(tokens, model.cfg)
    note = processed_residual_note(model)
    if note:
        warnings.warn(note, stacklevel=2)
    n_layers = model.cfg.n_layers
    reducer = _Reducer(n_layers, massive_ratio, learned_attention_sinks(model.cfg))
    hooks = reducer.hooks()
    router = routing_hooks(model)  # an MoE model: where P0 is routed (circuits.metrics.routing)
    hooks += router.hooks() if router is not None else []
    missing = [name for name, _ in hooks if name not in model.hook_dict]
    if missing:
        raise UsageError(f"hook {missing[0]} not found on the model: is it a HookedTransformer?")
    with tqdm(total=n_layers, desc="measure", unit="layer", disable=not progress) as bar:

        def on_layer_done(resid: Tensor, hook) -> None:  # returns None: the activation is kept
            bar.update(1)

        hooks += [(get_act_name("resid_post", layer), on_layer_done) for layer in range(n_layers)]
        with exclusive(model), torch.inference_mode():
            model.run_with_hooks(tokens, return_type=None, fwd_hooks=hooks)
    reducer.massive.sort(key=lambda m: -abs(m.value))
    return SinkReport(
        n_tokens=tokens.shape[1],
        batch_size=tokens.shape[0],
        bos=bos,
        eps=eps,
        layers=reducer.layer_metrics(eps),
        embed_p0_norm=reducer.embed[0],
        embed_rest_norm_median=reducer.embed[1],
        massive_activations=reducer.massive[:max_massive],
        layer0_sum_p_squared=reducer.recognition["sum_p_squared"],
        layer0_attn_out_norm=reducer.recognition["attn_out_norm"],
        massive_ratio=massive_ratio,
        extra={} if router is None else {"routing": router.report(model)},
    )
