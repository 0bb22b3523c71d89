"""Readouts as data: what a patched run is measured by, and what it reads.

Each readout *declares* the hooks it reads (``reads``). The engine captures exactly those, reduces
each to a small per-patch tensor at the hook (``reduce``) and combines the reductions into one
value per patch (``combine``). From the declaration the engine decides which shortcuts are exact
(``circuits.patching.forward``): where the forward may stop, which patches cannot change the
readout, which patched blocks may run on their prefix alone, and which reads of a patch that
starts deeper are its clean values. Two more declarations name the estimates that apply:
``per_layer_detail`` (the value is the mean of per-layer columns, each read within its layer:
nested runs) and ``sink_layers`` (the value *is* Gu et al.'s sink score of those layers: the
P0-stream estimate and attribution patching compute it).

* ``SinkMetric``: Gu et al.'s sink score of the receiver layers (the circuit's output);
* ``AttentionToP0``: mean attention of queries q >= 1 to P0 in the receiver layers;
* ``P0NormMetric``: P0's residual norm after a layer (the massive-activation signal);
* ``CacheMetric``: any callable on the activation cache of named hooks;
* output readouts (``circuits.patching.output_readouts``): next-token loss, logit difference, KL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from circuits.backend import ActivationCache, HookedModel, get_act_name, learned_attention_sinks
from circuits.core.arguments import Count, Index, NonEmpty, checked
from circuits.core.conventions import default_receiver_layers
from circuits.core.errors import UsageError
from circuits.metrics.attention import attn_to_p0, check_pattern, sink_score
from circuits.metrics.residual import residual_norms
from circuits.patching.hook_order import read_position


class Metric:
    """A readout: what a patched run is measured by (the module docstring).

    ``reads(model)``: the hooks read, any order. ``reduce(name, acts, clean)``: ``acts`` is
    ``[n_present, batch, ...]`` (one slice per patch present at that hook), ``clean`` the clean
    run's activation there when the readout asked for it (``needs_clean``); returns
    ``[n_present, ...]``. ``combine(reduced)``: per hook ``[n_patches, ...]`` -> ``(values
    [n_patches], detail [n_patches, ...] | None)``. ``key()``: hashable data naming the
    readout (equal keys: equal questions). ``reduction_key``: readouts whose reductions of a
    hook coincide share it (their clean reductions are computed once).
    """

    name = "metric"
    per_layer_detail = False

    def validate(self, model: HookedModel, tokens: Tensor) -> None:
        """Check the readout against the model and prompts (and keep what ``reduce`` needs)."""

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        raise NotImplementedError

    def needs_clean(self) -> bool:
        return False

    def reduction_key(self) -> Any:
        return self.key()

    def key(self) -> Any:
        raise NotImplementedError

    def reduce(self, name: str, acts: Tensor, clean: Tensor | None) -> Tensor:
        raise NotImplementedError

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def sink_layers(self) -> tuple[int, ...] | None:
        """The layers whose mean Gu sink score this readout is, if it is exactly that (the
        P0-stream estimate and attribution patching compute only it); else None."""
        return None

    def detail_layers(self) -> tuple[int, ...]:
        """With ``per_layer_detail``: the layer each detail column reads (within that layer)."""
        raise NotImplementedError

    def resolved(self, last_patched_layer: int, n_layers: int) -> Metric:
        """This readout with defaults that depend on the patches filled in."""
        return self


class _PatternReadout(Metric):
    """A per-head reduction of the receiver layers' attention patterns, averaged over heads and
    then over layers; ``receivers=None``: the default receiver layers
    (``circuits.core.conventions.default_receiver_layers``: layer 2 .. last, as ``discover``)."""

    per_layer_detail = True
    _reduce: Callable[[Tensor], Tensor]

    @checked
    def __init__(self, receivers: NonEmpty[Index] | None = None) -> None:
        self.receivers: tuple[int, ...] | None = (
            None if receivers is None else tuple(sorted({int(r) for r in receivers}))
        )
        self._sinks = False

    def resolved(self, last_patched_layer: int, n_layers: int) -> Metric:
        if self.receivers is not None:
            return self
        return type(self)(default_receiver_layers(n_layers))

    @property
    def layers(self) -> tuple[int, ...]:
        if self.receivers is None:
            raise RuntimeError(f"{type(self).__name__} receivers are unresolved (internal error)")
        return self.receivers

    def detail_layers(self) -> tuple[int, ...]:
        return self.layers

    def validate(self, model: HookedModel, tokens: Tensor) -> None:
        self._sinks = learned_attention_sinks(model.cfg)
        if self.receivers is None:
            raise UsageError(f"{type(self).__name__} receivers are unresolved (internal error)")
        if not self.receivers:
            raise UsageError(f"{type(self).__name__} needs at least one receiver layer")
        bad = [r for r in self.receivers if not 0 <= r < model.cfg.n_layers]
        if bad:
            raise UsageError(
                f"receiver layer(s) {bad} out of range: the model has layers "
                f"0..{model.cfg.n_layers - 1}"
            )

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        return tuple(get_act_name("pattern", r) for r in self.layers)

    def key(self) -> Any:
        return (self.name, self.receivers)

    def reduction_key(self) -> Any:
        return self.name

    def reduce(self, name: str, acts: Tensor, clean: Tensor | None) -> Tensor:
        check_pattern(acts.reshape(-1, *acts.shape[2:]), name, sinks=self._sinks)
        return torch.stack([type(self)._reduce(c) for c in acts])  # [n, head]

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        cols = [reduced[get_act_name("pattern", r)].float().mean(dim=-1) for r in self.layers]
        detail = torch.stack(cols, dim=1)  # [n, receivers]
        return detail.mean(dim=1), detail


class SinkMetric(_PatternReadout):
    """Gu et al.'s sink score alpha_0 (``circuits.metrics.sink_score``: mean over queries q >= 0
    of A[q, 0], batch-averaged), averaged over the heads of the receiver layers and then over
    the receiver layers. ``receivers=None``: the default receiver layers, layer 2 .. last (the
    same for every patch, as ``discover``). The per-layer values are kept as ``detail``.
    """

    name = "sink_score"
    _reduce = staticmethod(sink_score)

    def sink_layers(self) -> tuple[int, ...] | None:
        return self.layers

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": "Gu et al. alpha_0: mean over queries q>=0 of A[q,0], averaged over "
            "prompts, heads and receiver layers",
            "receiver_layers": list(self.receivers or []),
        }


class AttentionToP0(_PatternReadout):
    """Mean attention of the queries q >= 1 to position 0 (``circuits.metrics.attn_to_p0``),
    averaged over prompts, the heads of the receiver layers, then the receiver layers."""

    name = "attn_to_p0"
    _reduce = staticmethod(attn_to_p0)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": "mean over queries q>=1 of A[q,0], averaged over prompts, heads and "
            "receiver layers",
            "receiver_layers": list(self.receivers or []),
        }


class P0NormMetric(Metric):
    """P0's residual norm after block ``layer`` (``hook_resid_post``), batch-averaged, as in
    ``circuits.metrics.residual_norms``: the massive-activation signal."""

    name = "p0_norm"

    @checked
    def __init__(self, layer: Index) -> None:
        self.layer = int(layer)

    def validate(self, model: HookedModel, tokens: Tensor) -> None:
        if not 0 <= self.layer < model.cfg.n_layers:
            raise UsageError(
                f"P0 norm layer {self.layer} out of range: the model has layers "
                f"0..{model.cfg.n_layers - 1}"
            )

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        return (get_act_name("resid_post", self.layer),)

    def key(self) -> Any:
        return (self.name, self.layer)

    def reduction_key(self) -> Any:
        return self.name

    def reduce(self, name: str, acts: Tensor, clean: Tensor | None) -> Tensor:
        return torch.tensor([float(residual_norms(c)[0]) for c in acts])

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, None]:
        return reduced[get_act_name("resid_post", self.layer)], None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": "l2 norm of blocks.{layer}.hook_resid_post at position 0, averaged "
            "over prompts",
            "layer": self.layer,
        }


class _MissingHook(dict):
    def __missing__(self, key: str) -> Tensor:
        if key in ("logits", "hook_logits") or key.startswith("unembed."):
            raise UsageError(
                "logits are not a hook: use an output readout (NextTokenLoss, LogitDifference, "
                "KLToClean), or read ln_final.hook_normalized and apply "
                "circuits.patching.output_readouts.logits_of"
            )
        raise UsageError(
            f"the cache callable read {key!r}, which its readout does not capture: "
            f"name it in CacheMetric(fn, hooks=[...]) (captured: {sorted(self)[:4]}...)"
        )


class CacheMetric(Metric):
    """Any callable on the activation cache: ``fn(cache) -> scalar``.

    ``cache`` is a TransformerLens ``ActivationCache`` of one patched run (batch = the prompts)
    holding the hooks named in ``hooks`` (default: every hook of every block and ``ln_final``,
    which costs memory on large batches: name the hooks you read). A hook the patch cannot reach
    holds its clean value. ``fn`` must return a Python number or a 0-dim tensor; this is checked
    on the clean run before any patching. ``stop_layer``: with the default hooks, read blocks
    below it only.
    """

    name = "cache_callable"

    @checked
    def __init__(
        self,
        fn: Callable[[ActivationCache], Any],
        stop_layer: Count | None = None,
        *,
        hooks: NonEmpty[str] | None = None,
    ) -> None:
        if not callable(fn):
            raise UsageError(f"metric must be callable, got {type(fn).__name__}")
        self.fn = fn
        self._stop = stop_layer
        self.hooks = None if hooks is None else tuple(hooks)
        self._model: HookedModel | None = None

    def validate(self, model: HookedModel, tokens: Tensor) -> None:
        self._model = model
        if self._stop is not None and not 1 <= self._stop <= model.cfg.n_layers:
            raise UsageError(f"stop_layer {self._stop} out of range 1..{model.cfg.n_layers}")
        if self.hooks is not None:
            unknown = [h for h in self.hooks if h not in model.hook_dict]
            if unknown:
                raise UsageError(f"hook(s) {unknown[:3]} are not hooks of this model")
            if not self.hooks:
                raise UsageError("name at least one hook; for logits use an output readout")
            unembed = [h for h in self.hooks if h.startswith("unembed.")]
            if unembed:
                raise UsageError(
                    f"{unembed[0]}: the engine never runs the unembedding of the stacked batch; "
                    "read ln_final.hook_normalized (with circuits.patching.output_readouts."
                    "logits_of) or use an output readout (NextTokenLoss, LogitDifference, KLToClean)"
                )

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        if self.hooks is not None:
            return self.hooks
        stop = model.cfg.n_layers if self._stop is None else self._stop
        names = []
        for name in model.hook_dict:
            layer, _ = read_position(name, model.cfg.n_layers)
            if layer < stop or (self._stop is None and name.startswith("ln_final")):
                names.append(name)
        return tuple(names)

    def key(self) -> Any:
        return (self.name, self.fn, self._stop, self.hooks)  # holds fn: its id cannot be reused

    def reduction_key(self) -> Any:
        return "capture"  # the activation itself: shared by every cache callable

    def reduce(self, name: str, acts: Tensor, clean: Tensor | None) -> Tensor:
        return acts.detach().clone()

    def describe(self) -> dict[str, Any]:
        return {
            "name": getattr(self.fn, "__name__", self.name),
            "definition": "user callable on the cache",
            **({"hooks": list(self.hooks)} if self.hooks is not None else {}),
        }

    @staticmethod
    def to_scalar(value: Any) -> float:
        if isinstance(value, Tensor):
            if value.numel() != 1 or value.ndim != 0:
                raise UsageError(
                    f"the metric callable returned a tensor of shape {tuple(value.shape)}; "
                    "it must return a scalar (a number or a 0-dim tensor), e.g. reduce with .mean()"
                )
            return float(value.item())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UsageError(
            f"the metric callable returned {type(value).__name__}; it must return a scalar "
            "(a number or a 0-dim tensor)"
        )

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, None]:
        n = next(iter(reduced.values())).shape[0]
        values = []
        for k in range(n):
            cache = _MissingHook({name: acts[k] for name, acts in reduced.items()})
            with torch.inference_mode():  # the cached tensors are inference tensors
                values.append(self.to_scalar(self.fn(ActivationCache(cache, self._model))))
        return torch.tensor(values), None


def as_readout(metric: Metric | Callable | None) -> Metric:
    """A readout from what a caller passed: a readout as is, a callable on the cache wrapped in
    ``CacheMetric``, None: the sink score of the default receiver layers (2 .. last)."""
    if metric is None:
        return SinkMetric()
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return CacheMetric(metric)
    raise UsageError(
        f"metric must be a readout or a callable on the cache, got {type(metric).__name__}"
    )
