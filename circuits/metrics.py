"""Attention-sink metrics, exactly as DESIGN.md's "Metric conventions" define them.

Two layers of API:

* Pure functions on tensors (``attn_to_p0``, ``sink_score``, ``sink_rate``, ``residual_norms``,
  ``massive_activations``, ``sum_p_squared``, ``p0_direction_cosine``). They take the
  post-softmax pattern ``A[batch, head, query, key]`` (TransformerLens' ``hook_pattern``) or a
  residual stream ``[batch, pos, d_model]`` and return numbers in the paper's terms.
* ``measure_sinks(model, tokens)``: one forward pass with hooks that reduce each layer's
  activations on the fly (nothing of size ``pos x pos`` is kept), returning a ``SinkReport``
  whose ``to_dict()`` is the ``sink_metrics.json`` schema documented in README.

Batches must hold sequences of equal length with no padding: position 0 must be the real first
token of every row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

DEFAULT_EPS = 0.3
"""Gu et al.'s threshold for calling a head a sink head (Barbero et al. use 0.8)."""

MASSIVE_ABS_THRESHOLD = 100.0
MASSIVE_RATIO_THRESHOLD = 1000.0
NORM_RATIO_SINK_THRESHOLD = 10.0
"""PAPER.md: the first layer where the P0 norm exceeds ~10x the median of the other positions."""


# ---------------------------------------------------------------------------------------------
# Pure functions on patterns and residuals
# ---------------------------------------------------------------------------------------------


def _check_pattern(pattern: Tensor) -> None:
    if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(
            f"expected an attention pattern [batch, head, query, key], got shape {tuple(pattern.shape)}"
        )
    if pattern.shape[-1] < 2:
        raise ValueError("attention-sink metrics need at least 2 tokens (position 0 and one other)")


def attn_to_p0(pattern: Float[Tensor, "batch head query key"]) -> Float[Tensor, " head"]:
    """Attention that the other positions pay to P0: mean over queries q >= 1 of A[q, 0].

    Averaged over the batch; one value per head. The layer value is the mean over heads.
    """
    _check_pattern(pattern)
    return pattern[:, :, 1:, 0].mean(dim=(0, 2))


def sink_score(
    pattern: Float[Tensor, "batch head query key"], key_position: int = 0
) -> Float[Tensor, " head"]:
    """Gu et al.'s alpha_k: mean over queries q >= k of A[q, k] (P0's own query included for k=0).

    Averaged over the batch; one value per head.
    """
    _check_pattern(pattern)
    if not 0 <= key_position < pattern.shape[-1]:
        raise ValueError(f"key_position {key_position} is outside the {pattern.shape[-1]} tokens")
    return pattern[:, :, key_position:, key_position].mean(dim=(0, 2))


def sink_rate(scores: Float[Tensor, "..."], eps: float = DEFAULT_EPS) -> float:
    """Gu et al.'s Sink^eps: the share of heads whose sink score exceeds eps (0..1, not percent)."""
    if scores.numel() == 0:
        raise ValueError("sink_rate needs at least one head score")
    return (scores > eps).float().mean().item()


def residual_norms(resid: Float[Tensor, "batch pos d_model"]) -> tuple[float, float]:
    """(P0 norm, median norm of positions >= 1) of one residual stream hook.

    P0 norm: the l2 norm at position 0, averaged over the batch. Rest: the median over every
    (row, position >= 1) pair of the l2 norm.
    """
    if resid.ndim != 3 or resid.shape[1] < 2:
        raise ValueError(
            f"expected a residual stream [batch, pos >= 2, d_model], got shape {tuple(resid.shape)}"
        )
    norms = resid.float().norm(dim=-1)
    return norms[:, 0].mean().item(), norms[:, 1:].median().item()


@dataclass(frozen=True)
class MassiveActivation:
    """One residual coordinate that Sun et al. (2024) would call a massive activation."""

    layer: int
    batch: int
    position: int
    dimension: int
    value: float
    ratio_to_median: float


def massive_activations(
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    abs_threshold: float = MASSIVE_ABS_THRESHOLD,
    ratio_threshold: float = MASSIVE_RATIO_THRESHOLD,
) -> list[MassiveActivation]:
    """Coordinates with |value| > abs_threshold and >= ratio_threshold x the median |value| of
    that hidden state (one hidden state = one (row, position) vector), after ``layer``."""
    magnitude = resid.float().abs()
    median = magnitude.median(dim=-1, keepdim=True).values.clamp_min(1e-12)
    hits = (magnitude > abs_threshold) & (magnitude >= ratio_threshold * median)
    found = []
    for b, p, d in hits.nonzero().tolist():
        found.append(
            MassiveActivation(
                layer=layer,
                batch=b,
                position=p,
                dimension=d,
                value=resid[b, p, d].item(),
                ratio_to_median=(magnitude[b, p, d] / median[b, p, 0]).item(),
            )
        )
    return found


def sum_p_squared(pattern: Float[Tensor, "batch head query key"]) -> Float[Tensor, "head query"]:
    """The recognition signal sum_i p_i^2 of each query's attention distribution.

    Exactly 1 at query 0 (P0 can only attend to itself), at most 1 elsewhere and 1/(q+1) for a
    uniform query. Averaged over the batch.
    """
    _check_pattern(pattern)
    return pattern.float().pow(2).sum(dim=-1).mean(dim=0)


def position_norms(x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, " pos"]:
    """l2 norm of each position's vector, averaged over the batch (e.g. layer-0 attention output)."""
    return x.float().norm(dim=-1).mean(dim=0)


def p0_direction_cosine(resid: Float[Tensor, "batch pos d_model"]) -> float | None:
    """Direction invariance: mean pairwise cosine between the rows' P0 residual vectors.

    None for a batch of one (there is no pair to compare).
    """
    if resid.shape[0] < 2:
        return None
    p0 = torch.nn.functional.normalize(resid[:, 0].float(), dim=-1)
    cos = p0 @ p0.T
    n = cos.shape[0]
    off_diagonal = cos.sum() - cos.diagonal().sum()
    return (off_diagonal / (n * (n - 1))).item()


# ---------------------------------------------------------------------------------------------
# One-pass measurement on a model
# ---------------------------------------------------------------------------------------------


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
    def first_norm_jump_layer(self) -> int | None:
        """First layer whose P0/rest norm ratio exceeds 10x (None if none does)."""
        for layer in self.layers:
            if layer.p0_norm_ratio > NORM_RATIO_SINK_THRESHOLD:
                return layer.layer
        return None

    def column(self, key: str) -> list[float]:
        """One per-layer metric as a list, e.g. ``report.column("attn_to_p0")``."""
        return [getattr(layer, key) for layer in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_tokens": self.n_tokens,
            "batch_size": self.batch_size,
            "bos": self.bos,
            "eps": self.eps,
            "sink_rate_all_layers": self.sink_rate_all,
            "sink_rate_from_layer2": self.sink_rate_from_layer2,
            "first_layer_norm_ratio_over_10": self.first_norm_jump_layer,
            "embed": {
                "p0_norm": self.embed_p0_norm,
                "rest_norm_median": self.embed_rest_norm_median,
            },
            "layers": [asdict(layer) for layer in self.layers],
            "recognition": {
                "layer0_sum_p_squared": self.layer0_sum_p_squared,
                "layer0_attn_out_norm": self.layer0_attn_out_norm,
            },
            "massive_ratio_threshold": self.massive_ratio,
            "massive_activations": [asdict(m) for m in self.massive_activations],
            **self.extra,
        }


def measure_sinks(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    *,
    bos: bool,
    eps: float = DEFAULT_EPS,
    max_massive: int = 200,
    massive_ratio: float = MASSIVE_RATIO_THRESHOLD,
    progress: bool = False,
) -> SinkReport:
    """Run ``model`` once on ``tokens`` and measure the P0 sink in every layer.

    ``bos`` only records whether ``tokens`` start with a BOS token (the caller tokenized them);
    nothing is prepended here. Hooks reduce every activation as soon as it is produced, so the
    memory cost is one layer's pattern at a time.
    """
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(
            f"need a [batch, pos] token tensor with at least 2 positions, got {tuple(tokens.shape)}"
        )
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(
            f"{tokens.shape[1]} tokens exceed the model's context of {model.cfg.n_ctx}"
        )
    n_layers = model.cfg.n_layers
    per_layer: dict[int, dict[str, Any]] = {layer: {} for layer in range(n_layers)}
    found_massive: list[MassiveActivation] = []
    recognition: dict[str, list[float]] = {}
    embed: dict[str, float] = {}

    def on_pattern(pattern: Tensor, hook) -> None:
        layer = hook.layer()
        per_layer[layer]["attn_to_p0"] = attn_to_p0(pattern)
        per_layer[layer]["sink_score"] = sink_score(pattern)
        if layer == 0:
            recognition["sum_p_squared"] = sum_p_squared(pattern).mean(dim=0).tolist()

    def on_resid_post(resid: Tensor, hook) -> None:
        layer = hook.layer()
        per_layer[layer]["norms"] = residual_norms(resid)
        per_layer[layer]["cosine"] = p0_direction_cosine(resid)
        found_massive.extend(massive_activations(resid, layer, ratio_threshold=massive_ratio))

    def on_embed(resid: Tensor, hook) -> None:
        embed["p0"], embed["rest"] = residual_norms(resid)

    def on_attn_out0(attn_out: Tensor, hook) -> None:
        recognition["attn_out_norm"] = position_norms(attn_out).tolist()

    hooks = [(get_act_name("resid_pre", 0), on_embed), (get_act_name("attn_out", 0), on_attn_out0)]
    for layer in range(n_layers):
        hooks.append((get_act_name("pattern", layer), on_pattern))
        hooks.append((get_act_name("resid_post", layer), on_resid_post))
    for name, _ in hooks:
        if name not in model.hook_dict:
            raise KeyError(f"hook {name} not found on the model: is it a HookedTransformer?")

    with tqdm(total=n_layers, desc="measure", unit="layer", disable=not progress) as bar:

        def on_layer_done(resid: Tensor, hook) -> None:
            bar.update(1)

        progress_hooks = [
            (get_act_name("resid_post", layer), on_layer_done) for layer in range(n_layers)
        ]
        with torch.inference_mode():
            model.run_with_hooks(tokens, return_type=None, fwd_hooks=hooks + progress_hooks)

    layers = []
    for layer in range(n_layers):
        stats = per_layer[layer]
        p0_norm, rest = stats["norms"]
        heads = [
            HeadMetrics(head=h, attn_to_p0=a, sink_score=s)
            for h, (a, s) in enumerate(
                zip(stats["attn_to_p0"].tolist(), stats["sink_score"].tolist(), strict=True)
            )
        ]
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
                heads=heads,
            )
        )
    found_massive.sort(key=lambda m: -abs(m.value))
    return SinkReport(
        n_tokens=tokens.shape[1],
        batch_size=tokens.shape[0],
        bos=bos,
        eps=eps,
        layers=layers,
        embed_p0_norm=embed["p0"],
        embed_rest_norm_median=embed["rest"],
        massive_activations=found_massive[:max_massive],
        layer0_sum_p_squared=recognition["sum_p_squared"],
        layer0_attn_out_norm=recognition["attn_out_norm"],
        massive_ratio=massive_ratio,
    )
