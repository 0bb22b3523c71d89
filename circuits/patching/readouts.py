"""Readouts: what a patched run is measured by, read through hooks as the run goes.

* ``SinkMetric``: Gu et al.'s sink score of the receiver layers (the circuit's output);
* ``P0NormMetric``: P0's residual norm after a layer (the massive-activation signal);
* ``CacheMetric``: any callable on the activation cache.

The engine (``circuits.patching.engine``) calls ``begin(n_patches, batch, start_layer)`` before a
run, registers ``hooks()`` and calls ``finish()`` for one value per patch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from circuits.core.errors import UsageError
from circuits.metrics.attention import check_pattern, sink_score
from circuits.metrics.residual import residual_norms


class Metric:
    """What a patched run is measured by. Subclasses read activations through hooks.

    The engine calls ``begin(n_patches, batch, start_layer)`` before a run, registers
    ``hooks()``, and calls ``finish()`` for one value per patch (the batch mean, as in
    ``circuits.metrics``). The batch grows as the run goes deeper (see ``Patcher._forward``):
    at a hook, the rows present are those of the first ``act.shape[0] // batch`` patches; a patch
    whose rows are absent at a hook has not started yet, so its value there is the clean one.
    """

    name = "metric"

    def stop_layer(self, model: HookedTransformer) -> int:
        """Blocks ``[start, stop)`` are run: the first block the metric no longer needs."""
        raise NotImplementedError

    def validate(self, model: HookedTransformer, n_pos: int) -> None:
        pass

    def read_order(self) -> tuple[int, float] | None:
        """Where the metric's last read happens (a site must come strictly before it to be able
        to change the metric); None: no check."""
        return None

    def last_hook(self) -> str | None:
        """The hook after which nothing the metric reads is left to compute: the forward is cut
        there, even mid-block (None: run through block ``stop_layer - 1``)."""
        return None

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def begin(self, n_patches: int, batch: int, start_layer: int | None) -> None:
        raise NotImplementedError

    def hooks(self) -> list[tuple[str, Callable]]:
        raise NotImplementedError

    def finish(self) -> tuple[Tensor, Tensor | None]:
        """(values [n_patches], optional detail [n_patches, ...])."""
        raise NotImplementedError


class SinkMetric(Metric):
    """Gu et al.'s sink score alpha_0 (``circuits.metrics.sink_score``: mean over queries q >= 0
    of A[q, 0], batch-averaged), averaged over the heads of the receiver layers and then over
    the receiver layers. ``receivers=None``: every layer after the last patched one (resolved
    per call by the engine). The per-layer values are kept as ``detail``.
    """

    name = "sink_score"

    def __init__(self, receivers: Sequence[int] | None = None) -> None:
        self.receivers: tuple[int, ...] | None = (
            None if receivers is None else tuple(sorted({int(r) for r in receivers}))
        )
        self._clean_per_layer: dict[int, Tensor] = {}

    def resolved(self, last_patched_layer: int, n_layers: int) -> SinkMetric:
        if self.receivers is not None:
            return self
        layers = list(range(last_patched_layer + 1, n_layers))
        if not layers:
            raise UsageError(
                f"no layer after the last patched layer {last_patched_layer}: "
                "pass receivers=[...] explicitly"
            )
        return SinkMetric(layers)

    _sinks = False

    def validate(self, model: HookedTransformer, n_pos: int) -> None:
        self._sinks = bool(model.cfg.use_attention_sinks)
        if self.receivers is None:
            raise UsageError("SinkMetric receivers are unresolved (internal error)")
        if not self.receivers:
            raise UsageError("SinkMetric needs at least one receiver layer")
        bad = [r for r in self.receivers if not 0 <= r < model.cfg.n_layers]
        if bad:
            raise UsageError(
                f"receiver layer(s) {bad} out of range: the model has layers 0..{model.cfg.n_layers - 1}"
            )

    @property
    def layers(self) -> tuple[int, ...]:
        """The receiver layers, once resolved (``resolved``); an internal error before."""
        if self.receivers is None:
            raise RuntimeError("SinkMetric receivers are unresolved (internal error)")
        return self.receivers

    def read_order(self) -> tuple[int, float] | None:
        return (max(self.receivers), 1.0) if self.receivers else None

    def stop_layer(self, model: HookedTransformer) -> int:
        return max(self.layers) + 1

    def last_hook(self) -> str | None:
        # the last receiver's pattern: its z, attention output and MLP are never needed
        return get_act_name("pattern", max(self.receivers)) if self.receivers else None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": "Gu et al. alpha_0: mean over queries q>=0 of A[q,0], averaged over "
            "prompts, heads and receiver layers",
            "receiver_layers": list(self.receivers or []),
        }

    def set_clean(self, per_layer: dict[int, Tensor]) -> None:
        self._clean_per_layer = per_layer

    def begin(self, n_patches: int, batch: int, start_layer: int | None) -> None:
        self._n, self._b = n_patches, batch
        self._start = 0 if start_layer is None else start_layer
        self._per_layer: dict[int, Tensor] = {}

    def _on_pattern(self, pattern: Tensor, hook) -> None:
        check_pattern(pattern, hook.name, sinks=self._sinks)
        layer = hook.layer()
        chunks = pattern.reshape(-1, self._b, *pattern.shape[1:])  # the patches present here
        self._per_layer[layer] = torch.stack([sink_score(c) for c in chunks])  # [present, head]

    def hooks(self) -> list[tuple[str, Callable]]:
        return [
            (get_act_name("pattern", r), self._on_pattern) for r in self.layers if r >= self._start
        ]

    def finish(self) -> tuple[Tensor, Tensor]:
        cols = []
        for r in self.layers:
            measured = self._per_layer.get(r, torch.empty(0, 0)).float().mean(dim=-1)
            missing = self._n - measured.shape[0]  # patches that start after layer r
            if missing and r not in self._clean_per_layer:
                raise RuntimeError(f"sink score of layer {r} was not measured (internal error)")
            if missing:
                clean = self._clean_per_layer[r].float().mean(dim=-1).reshape(1)
                measured = torch.cat([measured, clean.expand(missing)])
            cols.append(measured)
        detail = torch.stack(cols, dim=1)  # [n, receivers]
        return detail.mean(dim=1), detail

    def clean_per_layer(self) -> dict[int, Tensor]:
        return {r: v[0] for r, v in self._per_layer.items()}


class P0NormMetric(Metric):
    """P0's residual norm after block ``layer`` (``hook_resid_post``), batch-averaged, as in
    ``circuits.metrics.residual_norms``: the massive-activation signal."""

    name = "p0_norm"

    def __init__(self, layer: int) -> None:
        self.layer = int(layer)

    def validate(self, model: HookedTransformer, n_pos: int) -> None:
        if not 0 <= self.layer < model.cfg.n_layers:
            raise UsageError(
                f"P0 norm layer {self.layer} out of range: the model has layers 0..{model.cfg.n_layers - 1}"
            )

    def read_order(self) -> tuple[int, float] | None:
        return (self.layer, 5.0)  # resid_post[layer] is read

    def stop_layer(self, model: HookedTransformer) -> int:
        return self.layer + 1

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": "l2 norm of blocks.{layer}.hook_resid_post at position 0, averaged over prompts",
            "layer": self.layer,
        }

    def begin(self, n_patches: int, batch: int, start_layer: int | None) -> None:
        self._n, self._b = n_patches, batch
        self._values: Tensor | None = None

    def _on_resid(self, resid: Tensor, hook) -> None:
        chunks = resid.reshape(-1, self._b, *resid.shape[1:])
        if chunks.shape[0] != self._n:  # a patch starting after this layer is inert, never run
            raise RuntimeError("a patch started after the P0 norm layer (internal error)")
        self._values = torch.tensor([residual_norms(c)[0] for c in chunks])

    def hooks(self) -> list[tuple[str, Callable]]:
        return [(get_act_name("resid_post", self.layer), self._on_resid)]

    def finish(self) -> tuple[Tensor, None]:
        assert self._values is not None
        return self._values, None


class CacheMetric(Metric):
    """Any callable on the activation cache: ``fn(cache) -> scalar``.

    ``cache`` is a TransformerLens ``ActivationCache`` of one patched run (batch = the prompts),
    holding every hook of the blocks the run computed and the clean values below them (which a
    patch cannot change). ``fn`` must return a Python number or a 0-dim tensor; this is checked
    on the clean run before any patching. ``stop_layer``: the first block ``fn`` does not read
    (default: all blocks; logits are never computed).
    """

    name = "cache_callable"

    def __init__(self, fn: Callable[[ActivationCache], Any], stop_layer: int | None = None) -> None:
        if not callable(fn):
            raise UsageError(f"metric must be callable, got {type(fn).__name__}")
        self.fn = fn
        self._stop = stop_layer
        self._clean: dict[str, Tensor] = {}
        self._model: HookedTransformer | None = None

    def stop_layer(self, model: HookedTransformer) -> int:
        return model.cfg.n_layers if self._stop is None else self._stop

    def validate(self, model: HookedTransformer, n_pos: int) -> None:
        if self._stop is not None and not 1 <= self._stop <= model.cfg.n_layers:
            raise UsageError(f"stop_layer {self._stop} out of range 1..{model.cfg.n_layers}")

    def describe(self) -> dict[str, Any]:
        return {
            "name": getattr(self.fn, "__name__", self.name),
            "definition": "user callable on the cache",
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

    def check_on_clean(self, model: HookedTransformer, clean_cache: dict[str, Tensor]) -> float:
        self._model = model
        self._clean = clean_cache
        return self.to_scalar(self.fn(ActivationCache(clean_cache, model)))

    def begin(self, n_patches: int, batch: int, start_layer: int | None) -> None:
        self._n, self._b = n_patches, batch
        self._start = -1 if start_layer is None else start_layer
        self._captured: dict[str, Tensor] = {}

    def _capture(self, act: Tensor, hook) -> None:
        self._captured[hook.name] = act.detach()

    def hooks(self) -> list[tuple[str, Callable]]:
        assert self._model is not None
        names = []
        for name in self._model.hook_dict:
            layer = _hook_layer(name)
            if layer is None:
                if self._start == -1 and not name.startswith("ln_final"):
                    names.append(name)
            elif layer >= max(self._start, 0):
                names.append(name)
        return [(n, self._capture) for n in names]

    def finish(self) -> tuple[Tensor, None]:
        values = []
        for k in range(self._n):
            merged = dict(self._clean)
            for name, act in self._captured.items():
                if act.shape[0] >= (k + 1) * self._b:  # else patch k starts later: clean here
                    merged[name] = act[k * self._b : (k + 1) * self._b]
            values.append(self.to_scalar(self.fn(ActivationCache(merged, self._model))))
        return torch.tensor(values), None


def _hook_layer(name: str) -> int | None:
    if name.startswith("blocks."):
        return int(name.split(".")[1])
    return None
