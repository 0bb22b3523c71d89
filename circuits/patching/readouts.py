"""Readouts as data: what a patched run is measured by.

A readout is four things, and nothing else is asked of one:

* ``reads(model)``: the hooks it reads;
* ``reduce(name, acts)``: each read hook's activation reduced to a small per-patch tensor at
  the hook (a ``ComparedToClean`` readout is also given the clean activation there);
* ``combine(reduced)``: the reductions combined into one value per patch (and a detail);
* ``describe()``: its name, definition and parameters, as every result records them.

Two optional declarations: ``check(model, tokens)`` refuses a question the model cannot answer
(and resolves defaults such as the receiver layers), and ``layer_columns()`` says that the
detail's columns are each read within one layer (nested runs, the panel's per-layer curve).

Everything else the engine derives. From the reads it decides which shortcuts are exact
(``circuits.patching.forward``): where the forward may stop, which patches cannot change the
readout, which patched blocks may run on their prefix alone. Clean values are cached under
``question_key``: the readout's class and its public attributes (its parameters), with a
callable held by the key itself, so two readouts share a clean value only when they ask the same
question, and a new readout with a new parameter cannot receive another's clean value. Only
``SinkScore`` *is* Gu et al.'s sink score, which the P0-stream estimate and attribution patching
compute.

* ``SinkScore``: Gu et al.'s sink score of the receiver layers (the circuit's output);
* ``AttentionToP0``: mean attention of queries q >= 1 to P0 in the receiver layers;
* ``P0Norm``: P0's residual norm after a layer (the massive-activation signal);
* ``CacheReadout``: any callable on the activation cache of named hooks;
* output readouts (``circuits.patching.output_readouts``): next-token loss, logit difference, KL.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
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


class Readout:
    """A readout (the module docstring): ``reads``, ``reduce``, ``combine``, ``describe``.

    ``reduce(name, acts)``: ``acts`` is ``[n_present, batch, ...]`` (one slice per patch present
    at that hook); returns ``[n_present, ...]``. ``combine(reduced)``: per hook ``[n_patches,
    ...]`` -> ``(values [n_patches], detail [n_patches, ...] | None)``. A readout's parameters
    are its public attributes (they make its ``question_key``); what ``check`` keeps for
    ``reduce`` goes in private ones.
    """

    name = "readout"
    label = ""
    """How a control names this readout (the panel's readout menu); empty: not offered there."""
    axis = ""
    """What a chart's value axis says for this readout: the quantity and its unit (empty: the
    label)."""
    takes_receivers = False
    """Whether the constructor's first argument is the receiver layers (a control passes its own)."""

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        raise NotImplementedError

    def reduce(self, name: str, acts: Tensor) -> Tensor:
        raise NotImplementedError

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        """Refuse (``UsageError``) a question this model and these prompts cannot answer, and
        keep what ``reduce`` needs (optional)."""

    def layer_columns(self) -> tuple[int, ...] | None:
        """The layer each detail column is read within, when the value is their mean
        (optional; None: no such structure)."""
        return None


class ComparedToClean(Readout):
    """A readout whose reduction compares the patched activation with the clean one at the same
    hook (KL to the clean distribution): ``reduce(name, acts, clean)``."""

    def reduce(self, name: str, acts: Tensor, clean: Tensor | None = None) -> Tensor:  # type: ignore[override]
        raise NotImplementedError


def _frozen(value: Any) -> Hashable:
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape), tuple(value.reshape(-1).tolist()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, range):
        return tuple(value)
    hash(value)  # a callable or any other object: compared (and kept alive) by identity
    return value


def question_key(readout: Readout) -> Hashable:
    """What a readout asks, as a hashable key: its class and its public attributes. Two readouts
    share cached clean values exactly when their keys are equal (the module docstring)."""
    params = tuple(
        sorted((k, _frozen(v)) for k, v in vars(readout).items() if not k.startswith("_"))
    )
    return (type(readout), params)


class PatternReadout(Readout):
    """A per-head reduction of the receiver layers' attention patterns, averaged over heads and
    then over layers; ``receivers=None``: the default receiver layers of the model it is asked
    of (``circuits.core.conventions.default_receiver_layers``: layer 2 .. last, as ``discover``)."""

    takes_receivers = True

    _reduce: Callable[[Tensor], Tensor]

    @checked
    def __init__(self, receivers: NonEmpty[Index] | None = None) -> None:
        self.receivers: tuple[int, ...] | None = (
            None if receivers is None else tuple(sorted({int(r) for r in receivers}))
        )
        self._layers: tuple[int, ...] | None = self.receivers
        self._sinks = False

    @property
    def layers(self) -> tuple[int, ...]:
        """The receiver layers (the defaults once ``check`` has seen the model)."""
        if self._layers is None:
            raise RuntimeError(f"{type(self).__name__} used before check (internal error)")
        return self._layers

    def layer_columns(self) -> tuple[int, ...]:
        return self.layers

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        self._sinks = learned_attention_sinks(model.cfg)
        n = model.cfg.n_layers
        self._layers = self.receivers or tuple(default_receiver_layers(n))
        bad = [r for r in self._layers if not 0 <= r < n]
        if bad:
            raise UsageError(
                f"receiver layer(s) {bad} out of range: the model has layers 0..{n - 1}"
            )

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        return tuple(get_act_name("pattern", r) for r in self.layers)

    def reduce(self, name: str, acts: Tensor) -> Tensor:
        check_pattern(acts.reshape(-1, *acts.shape[2:]), name, sinks=self._sinks)
        return torch.stack([type(self)._reduce(c) for c in acts])  # [n, head]

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        cols = [reduced[get_act_name("pattern", r)].float().mean(dim=-1) for r in self.layers]
        detail = torch.stack(cols, dim=1)  # [n, receivers]
        return detail.mean(dim=1), detail

    def _described(self, definition: str) -> dict[str, Any]:
        layers = self._layers if self._layers is not None else self.receivers
        return {"name": self.name, "definition": definition, "receiver_layers": list(layers or [])}


class SinkScore(PatternReadout):
    """Gu et al.'s sink score alpha_0 (``circuits.metrics.sink_score``: mean over queries q >= 0
    of A[q, 0], batch-averaged), averaged over the heads of the receiver layers and then over
    the receiver layers. ``receivers=None``: the default receiver layers, layer 2 .. last (the
    same for every patch, as ``discover``). The per-layer values are kept as ``detail``.
    """

    name = "sink_score"
    label = "sink score"
    axis = "sink score α₀ (attention to P0, queries ≥ 0)"
    _reduce = staticmethod(sink_score)

    def describe(self) -> dict[str, Any]:
        return self._described(
            "Gu et al. alpha_0: mean over queries q>=0 of A[q,0], averaged over prompts, heads "
            "and receiver layers"
        )


class AttentionToP0(PatternReadout):
    """Mean attention of the queries q >= 1 to position 0 (``circuits.metrics.attn_to_p0``),
    averaged over prompts, the heads of the receiver layers, then the receiver layers."""

    name = "attn_to_p0"
    label = "attention to P0"
    axis = "attention to P0 (queries ≥ 1)"
    _reduce = staticmethod(attn_to_p0)

    def describe(self) -> dict[str, Any]:
        return self._described(
            "mean over queries q>=1 of A[q,0], averaged over prompts, heads and receiver layers"
        )


class P0Norm(Readout):
    """P0's residual norm after block ``layer`` (``hook_resid_post``), batch-averaged, as in
    ``circuits.metrics.residual_norms``: the massive-activation signal."""

    name = "p0_norm"

    @checked
    def __init__(self, layer: Index) -> None:
        self.layer = int(layer)

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        if not 0 <= self.layer < model.cfg.n_layers:
            raise UsageError(
                f"P0 norm layer {self.layer} out of range: the model has layers "
                f"0..{model.cfg.n_layers - 1}"
            )

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        return (get_act_name("resid_post", self.layer),)

    def reduce(self, name: str, acts: Tensor) -> Tensor:
        return torch.tensor([float(residual_norms(c)[0]) for c in acts])  # float32 norms

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
            f"name it in CacheReadout(fn, hooks=[...]) (captured: {sorted(self)[:4]}...)"
        )


class CacheReadout(Readout):
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
        self.stop_layer = stop_layer
        self.hooks = None if hooks is None else tuple(hooks)
        self._model: HookedModel | None = None

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        self._model = model
        stop = self.stop_layer
        if stop is not None and not 1 <= stop <= model.cfg.n_layers:
            raise UsageError(f"stop_layer {stop} out of range 1..{model.cfg.n_layers}")
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
        stop = model.cfg.n_layers if self.stop_layer is None else self.stop_layer
        names = []
        for name in model.hook_dict:
            layer, _ = read_position(name, model.cfg.n_layers)
            if layer < stop or (self.stop_layer is None and name.startswith("ln_final")):
                names.append(name)
        return tuple(names)

    def reduce(self, name: str, acts: Tensor) -> Tensor:
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


def as_readout(metric: Readout | Callable | None) -> Readout:
    """A readout from what a caller passed: a readout as is, a callable on the cache wrapped in
    ``CacheReadout``, None: the sink score of the default receiver layers (2 .. last)."""
    if metric is None:
        return SinkScore()
    if isinstance(metric, Readout):
        return metric
    if callable(metric):
        return CacheReadout(metric)
    raise UsageError(
        f"metric must be a readout or a callable on the cache, got {type(metric).__name__}"
    )
