"""Activation patching and path patching at position zero, on a batched, truncated engine.

The question, in the paper's terms: *which components' outputs at position 0 (P0) make the
later layers' heads attend to P0?* A patch replaces a component's output at P0 by its
counterfactual value (see ``circuits.counterfactuals``: ``shift``, ``mean`` or ``zero``), the
model runs on, and a metric reads the result: the Gu et al. sink score of the receiver layers
(``SinkMetric``), P0's residual norm at a layer (``P0NormMetric``), or any callable on the cache
(``CacheMetric``).

Engine (``Patcher``):

* one clean run caches every residual stream and component output; a patch whose first site is
  in layer ``l`` starts the forward at block ``l`` from the cached clean ``resid_pre[l]``
  (``HookedTransformer.forward(start_at_layer=l)``): the layers below are never recomputed;
* the run stops at the metric's last read: for the sink metric, right after the last receiver
  layer's attention pattern (its z, attention output and MLP are never computed), and never
  with the unembedding;
* many patches share one forward: patch ``k`` owns rows ``k*B .. (k+1)*B`` of a stacked batch,
  and the batch *grows* with depth: a patch's rows join at the block where it starts (from the
  cached clean ``resid_pre``), so patches starting at different layers (a resid_pre grid has one
  per layer) still share one forward without recomputing any clean block;
* glibc is told to keep freed activation memory (``circuits.allocator``): a batched forward
  reuses its large buffers instead of page-faulting fresh ones in every block;
* numbers equal TransformerLens' ``transformer_lens.patching`` functions where they run the same
  experiment (tests check max |diff| <= 1e-4).

Path patching (``Patcher.path_patch``) follows the IOI method (Wang et al. 2022): the sender's
output at P0 takes its counterfactual value, every other component is frozen at its clean
value, so the receiver's input differs from clean by exactly the sender's direct write
``delta`` (its counterfactual output minus its clean output, through any post-norm). That
input is patched into the receiver (the K, Q or V input of heads in a later layer, or an MLP's
input) and everything downstream of the receiver runs freely. Grouped-query attention: we keep
TransformerLens' default ``ungroup_grouped_query_attention=False``, so with
``use_split_qkv_input`` the K and V inputs are per *key/value head*: a ``k``/``v`` receiver's
``heads`` index KV heads (``n_key_value_heads`` of them; each feeds ``n_heads / n_kv`` query
heads); a ``q`` receiver's ``heads`` index query heads.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from circuits.allocator import keep_freed_memory
from circuits.counterfactuals import COUNTERFACTUALS, check_counterfactual, counterfactual_values
from circuits.errors import UsageError
from circuits.metrics import residual_norms, sink_score

# ---------------------------------------------------------------------------------------------
# Sites: a component's output (or a residual stream) at some positions
# ---------------------------------------------------------------------------------------------

SITE_KINDS = ("embed", "resid_pre", "attn", "head", "resid_mid", "mlp", "resid_post")
_ACT = {
    "embed": "embed",
    "resid_pre": "resid_pre",
    "attn": "attn_out",
    "head": "z",
    "resid_mid": "resid_mid",
    "mlp": "mlp_out",
    "resid_post": "resid_post",
}
# Order of sites inside one block (embed comes before block 0).
_STAGE = {"embed": -1, "resid_pre": 0, "attn": 1, "head": 1, "resid_mid": 2, "mlp": 3, "resid_post": 4}


def _positions_label(positions: tuple[int, ...] | None) -> str:
    if positions is None:
        return "all"
    return "p" + ",".join(str(p) for p in positions)


@dataclass(frozen=True)
class Site:
    """One patchable place: ``kind`` in layer ``layer`` (head ``head``) at ``positions``.

    ``positions=None`` means every position (TransformerLens' ``*_all_pos`` functions).
    Names are stable and readable: ``embed@p0``, ``attn0@p0``, ``attn0.h3@p0``, ``mlp1@p0``,
    ``resid_pre5@p0``.
    """

    kind: str
    layer: int = 0
    head: int | None = None
    positions: tuple[int, ...] | None = (0,)

    def __post_init__(self) -> None:
        if self.positions is not None:
            object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))

    @property
    def act(self) -> str:
        return _ACT[self.kind]

    @property
    def hook_name(self) -> str:
        if self.kind == "embed":
            return get_act_name("embed")
        return get_act_name(self.act, self.layer)

    @property
    def start_layer(self) -> int | None:
        """The block the patched forward starts at (None: from the tokens, for the embedding)."""
        return None if self.kind == "embed" else self.layer

    @property
    def first_affected_layer(self) -> int:
        """The first layer whose attention pattern this site can change."""
        if self.kind == "embed":
            return 0
        return self.layer if self.kind == "resid_pre" else self.layer + 1

    @property
    def order(self) -> tuple[int, float]:
        """Where the site is written inside the model, for ordering checks."""
        return (-1 if self.kind == "embed" else self.layer, float(_STAGE[self.kind]))

    @property
    def name(self) -> str:
        where = _positions_label(self.positions)
        if self.kind == "embed":
            return f"embed@{where}"
        if self.kind == "head":
            return f"attn{self.layer}.h{self.head}@{where}"
        return f"{self.kind}{self.layer}@{where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "layer": self.layer,
            "head": self.head,
            "positions": None if self.positions is None else list(self.positions),
            "hook": self.hook_name,
        }


Patch = Site | Sequence[Site]
"""One patch: a single site, or several sites patched together in the same run."""


def _as_sites(patch: Patch) -> tuple[Site, ...]:
    if isinstance(patch, Site):
        return (patch,)
    sites = tuple(patch)
    if not sites or not all(isinstance(s, Site) for s in sites):
        raise UsageError("a patch must be a Site or a non-empty sequence of Sites")
    return sites


def patch_name(patch: Patch) -> str:
    return "+".join(s.name for s in _as_sites(patch))


# ---------------------------------------------------------------------------------------------
# Receivers for path patching
# ---------------------------------------------------------------------------------------------

RECEIVER_KINDS = ("q", "k", "v", "mlp")


@dataclass(frozen=True)
class Receiver:
    """The input a path ends in: the ``q``/``k``/``v`` input of heads in ``layer`` or an MLP's input.

    ``heads=None`` means all heads of the layer. For ``k``/``v`` on a grouped-query model the
    indices are KV heads (see the module docstring). Names: ``attn5.k``, ``attn5.h3.q``,
    ``attn5.kv1.k``, ``mlp1.in``.
    """

    kind: str
    layer: int
    heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.heads is not None:
            object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))

    @property
    def hook_name(self) -> str:
        return get_act_name("mlp_in" if self.kind == "mlp" else f"{self.kind}_input", self.layer)

    @property
    def name(self) -> str:
        if self.kind == "mlp":
            return f"mlp{self.layer}.in"
        if self.heads is None:
            return f"attn{self.layer}.{self.kind}"
        label = "h" if self.kind == "q" else "kv"
        return f"attn{self.layer}." + ".".join(f"{label}{h}" for h in self.heads) + f".{self.kind}"

    @property
    def order(self) -> tuple[int, float]:
        """Where the input is read inside the model: q/k before the pattern, v after it."""
        return (self.layer, {"q": 0.5, "k": 0.5, "v": 1.0, "mlp": 3.0}[self.kind])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "layer": self.layer,
            "heads": None if self.heads is None else list(self.heads),
            "hook": self.hook_name,
        }


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


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

    def validate(self, model: HookedTransformer, n_pos: int) -> None:
        if self.receivers is None:
            raise UsageError("SinkMetric receivers are unresolved (internal error)")
        if not self.receivers:
            raise UsageError("SinkMetric needs at least one receiver layer")
        bad = [r for r in self.receivers if not 0 <= r < model.cfg.n_layers]
        if bad:
            raise UsageError(
                f"receiver layer(s) {bad} out of range: the model has layers 0..{model.cfg.n_layers - 1}"
            )

    def read_order(self) -> tuple[int, float] | None:
        return (max(self.receivers), 1.0) if self.receivers else None

    def stop_layer(self, model: HookedTransformer) -> int:
        return max(self.receivers) + 1

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
        layer = hook.layer()
        chunks = pattern.reshape(-1, self._b, *pattern.shape[1:])  # the patches present here
        self._per_layer[layer] = torch.stack([sink_score(c) for c in chunks])  # [present, head]

    def hooks(self) -> list[tuple[str, Callable]]:
        return [
            (get_act_name("pattern", r), self._on_pattern)
            for r in self.receivers
            if r >= self._start
        ]

    def finish(self) -> tuple[Tensor, Tensor]:
        cols = []
        for r in self.receivers:
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
        return {"name": getattr(self.fn, "__name__", self.name), "definition": "user callable on the cache"}

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


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class PatchingResult:
    """Every effect of one sweep: ``values[i]`` is the metric with patch ``i`` applied.

    ``effect = value - clean`` (negative: the patch lowered the metric); ``relative = effect /
    clean``. ``detail`` holds per-receiver-layer values for the sink metric.
    """

    names: list[str]
    patches: list[list[dict[str, Any]]]
    values: Tensor
    clean: float
    metric: dict[str, Any]
    counterfactual: str
    detail: Tensor | None = None
    kind: str = "activation"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def effects(self) -> Tensor:
        return self.values - self.clean

    @property
    def relative(self) -> Tensor:
        return self.effects / self.clean if self.clean != 0 else torch.full_like(self.values, math.nan)

    def as_dict(self) -> dict[str, float]:
        """name -> effect."""
        return dict(zip(self.names, self.effects.tolist(), strict=True))

    def to_dict(self) -> dict[str, Any]:
        cleans = self.extra.get("per_path_clean") or [self.clean] * len(self.names)
        rows = []
        for i, name in enumerate(self.names):
            effect = float(self.values[i]) - cleans[i]
            row = {
                "name": name,
                "sites": self.patches[i],
                "value": float(self.values[i]),
                "clean": cleans[i],
                "effect": effect,
                "relative": effect / cleans[i] if cleans[i] and not math.isnan(cleans[i]) else None,
            }
            if self.detail is not None:
                row["per_receiver"] = [float(x) for x in self.detail[i].tolist()]
            rows.append(row)
        return {
            "kind": self.kind,
            "counterfactual": self.counterfactual,
            "counterfactual_definition": COUNTERFACTUALS[self.counterfactual],
            "metric": self.metric,
            "clean": None if math.isnan(self.clean) else self.clean,
            "effects": rows,
            **self.extra,
        }


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


@contextmanager
def _model_flags(model: HookedTransformer, *, split_qkv: bool = False, mlp_in: bool = False) -> Iterator[None]:
    """Temporarily turn on ``use_split_qkv_input`` / ``use_hook_mlp_in``; always restored."""
    old_split, old_mlp = model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in
    try:
        if split_qkv and not old_split:
            model.set_use_split_qkv_input(True)
        if mlp_in and not old_mlp:
            model.set_use_hook_mlp_in(True)
        yield
    finally:
        if model.cfg.use_split_qkv_input != old_split:
            model.set_use_split_qkv_input(old_split)
        if model.cfg.use_hook_mlp_in != old_mlp:
            model.set_use_hook_mlp_in(old_mlp)


_CACHED_ACTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")


class _ForwardDone(Exception):
    """Raised by the hook on the metric's last read: the rest of the forward is not needed."""


def _stop_forward(act: Tensor, hook) -> None:
    raise _ForwardDone


class Patcher:
    """Clean and counterfactual activations of ``model`` on ``tokens``, and patched runs on them.

    ``tokens``: ``[batch, pos]`` prompts of equal length, no padding (position 0 is each row's
    real first token). ``counterfactual``: ``shift`` | ``mean`` | ``zero``. ``max_rows``: the
    largest stacked batch one forward may use (``n_patches_per_forward * batch``).
    """

    def __init__(
        self,
        model: HookedTransformer,
        tokens: Int[Tensor, "batch pos"],
        counterfactual: str = "shift",
        *,
        shift_token: int | None = None,
        max_rows: int = 64,
        progress: bool = False,
    ) -> None:
        check_counterfactual(counterfactual)
        keep_freed_memory()
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[1] < 2:
            raise UsageError(
                f"tokens must be a [batch, pos] tensor with at least 2 positions, got "
                f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}"
            )
        if tokens.shape[1] > model.cfg.n_ctx:
            raise UsageError(f"{tokens.shape[1]} tokens exceed the model's context of {model.cfg.n_ctx}")
        if max_rows < 1:
            raise UsageError("max_rows must be >= 1")
        self.model = model
        self.tokens = tokens.to(model.cfg.device)
        self.counterfactual = counterfactual
        self.shift_token = shift_token
        self.max_rows = max_rows
        self.progress = progress
        self.batch, self.n_pos = tokens.shape
        cfg = model.cfg
        names = [get_act_name("embed")]
        for layer in range(cfg.n_layers):
            for act in _CACHED_ACTS:
                if act in ("resid_mid", "mlp_out") and cfg.attn_only:
                    continue
                names.append(get_act_name(act, layer))
        self._check_hooks(names)
        with torch.inference_mode():
            _, cache = model.run_with_cache(
                self.tokens, return_type=None, names_filter=lambda n: n in set(names)
            )
            self.clean: dict[str, Tensor] = {n: cache[n] for n in names}
            self.cf: dict[str, Tensor] = counterfactual_values(
                model, self.tokens, self.clean, counterfactual, names, shift_token=shift_token
            )
        self._clean_metric: dict[int, tuple[float, Tensor | None]] = {}
        self._clean_sink: dict[int, Tensor] | None = None

    # -- validation ---------------------------------------------------------------------------

    def _check_hooks(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.model.hook_dict]
        if missing:
            raise UsageError(f"hook(s) {missing[:3]} not found on the model: is it a HookedTransformer?")

    def _check_site(self, site: Site) -> None:
        cfg = self.model.cfg
        if site.kind not in SITE_KINDS:
            raise UsageError(f"unknown site kind {site.kind!r}; choose one of {', '.join(SITE_KINDS)}")
        if site.kind != "embed" and not 0 <= site.layer < cfg.n_layers:
            raise UsageError(f"layer {site.layer} out of range: the model has layers 0..{cfg.n_layers - 1}")
        if site.kind in ("mlp", "resid_mid") and cfg.attn_only:
            raise UsageError(f"{site.name}: the model is attention-only (no MLPs)")
        if site.kind == "head":
            if site.head is None or not 0 <= site.head < cfg.n_heads:
                raise UsageError(
                    f"head index {site.head} out of range in {site.name}: layer {site.layer} has heads 0..{cfg.n_heads - 1}"
                )
        elif site.head is not None:
            raise UsageError(f"{site.kind} sites take no head index (got head={site.head}); use kind='head'")
        if site.positions is not None:
            if not site.positions:
                raise UsageError("positions must be non-empty (or None for every position)")
            bad = [p for p in site.positions if not 0 <= p < self.n_pos]
            if bad:
                raise UsageError(
                    f"position(s) {bad} outside the prompt: {site.name} must use positions 0..{self.n_pos - 1}"
                )

    def _prepare_metric(self, metric: Metric | None, last_layer: int) -> Metric:
        if metric is None:
            metric = SinkMetric()
        if not isinstance(metric, Metric):
            if callable(metric):
                metric = CacheMetric(metric)
            else:
                raise UsageError(f"metric must be a Metric or a callable on the cache, got {type(metric).__name__}")
        if isinstance(metric, SinkMetric):
            metric = metric.resolved(last_layer, self.model.cfg.n_layers)
        metric.validate(self.model, self.n_pos)
        if isinstance(metric, CacheMetric):
            with torch.inference_mode():
                _, cache = self.model.run_with_cache(self.tokens, return_type=None)
            metric.check_on_clean(self.model, dict(cache.cache_dict))
        return metric

    # -- clean value ---------------------------------------------------------------------------

    def clean_value(self, metric: Metric) -> tuple[float, Tensor | None]:
        """The metric on the unpatched run (one forward from the tokens, cached per metric)."""
        if isinstance(metric, SinkMetric):
            # one clean forward over every layer serves every receiver set
            if self._clean_sink is None:
                probe = SinkMetric(range(self.model.cfg.n_layers))
                self._forward(probe, starts=[None], patch_hooks=[])
                self._clean_sink = probe.clean_per_layer()
            metric.set_clean({r: self._clean_sink[r] for r in metric.receivers})
            detail = torch.stack([self._clean_sink[r].float().mean() for r in metric.receivers])
            return float(detail.mean()), detail
        key = id(metric)
        if key not in self._clean_metric:
            values, detail = self._forward(metric, starts=[None], patch_hooks=[])
            self._clean_metric[key] = (float(values[0]), None if detail is None else detail[0])
        return self._clean_metric[key]

    # -- forwards ------------------------------------------------------------------------------

    def _forward(
        self,
        metric: Metric,
        *,
        starts: Sequence[int | None],
        patch_hooks: list[tuple[str, Callable]],
    ) -> tuple[Tensor, Tensor | None]:
        """Run one stacked batch, patch ``k`` owning rows ``k*B .. (k+1)*B``, up to the metric's
        last read (``Metric.last_hook``, else the end of its last block), with ``patch_hooks``
        applied, and return the metric per patch.

        ``starts[k]`` is the block where patch ``k`` first differs from the clean run (None: from
        the tokens, for every patch or none). The batch *grows*: the run starts at ``starts[0]``
        with the rows of the patches that start there, and at each later start a hook on
        ``resid_pre`` appends the rows of the patches starting at that block, copied from the
        cached clean ``resid_pre``. No row computes a block whose output equals the clean one,
        and one-patch-per-layer grids (resid_pre) still fill a batch.
        """
        starts = list(starts)
        blocks = [s for s in starts if s is not None]
        if blocks != sorted(blocks) or 0 < len(blocks) < len(starts):
            raise RuntimeError(f"patch starts must be non-decreasing and not mix None: {starts} (internal error)")
        model = self.model
        n, b, first = len(starts), self.batch, starts[0]
        metric.begin(n, b, first)
        counts = Counter(starts)
        joins: list[tuple[str, Callable]] = []
        if first is not None:
            for layer in sorted(counts)[1:]:
                rows = self.clean[get_act_name("resid_pre", layer)].repeat(counts[layer], 1, 1)

                def join(act: Tensor, hook, rows=rows) -> Tensor:
                    return torch.cat([act, rows])

                joins.append((get_act_name("resid_pre", layer), join))
        hooks = joins + patch_hooks + metric.hooks()  # same-hook order: join, patch, read
        last = metric.last_hook()
        if last is not None:
            hooks.append((last, _stop_forward))
        stop = metric.stop_layer(model)
        with torch.inference_mode():
            try:
                if first is None:
                    model.run_with_hooks(self.tokens.repeat(n, 1), fwd_hooks=hooks, stop_at_layer=stop)
                else:
                    inp = self.clean[get_act_name("resid_pre", first)].repeat(counts[first], 1, 1)
                    model.run_with_hooks(inp, fwd_hooks=hooks, start_at_layer=first, stop_at_layer=stop)
            except _ForwardDone:
                pass
        return metric.finish()

    def _jobs(self, starts: dict[int, int | None]) -> list[list[int]]:
        """Split patches (index -> start block) into forwards of at most ``max_rows`` rows, in
        order of start so that each forward's batch only grows (patches from the tokens apart)."""
        per_forward = max(1, self.max_rows // self.batch)
        from_tokens = [i for i, s in starts.items() if s is None]
        from_blocks = sorted((i for i, s in starts.items() if s is not None), key=lambda i: (starts[i], i))
        return [
            group[j : j + per_forward]
            for group in (from_tokens, from_blocks)
            for j in range(0, len(group), per_forward)
        ]

    def _setter_hooks(self, patches: list[tuple[Site, ...]]) -> list[tuple[str, Callable]]:
        """One hook per hook name, writing every patch's counterfactual values into its rows."""
        by_hook: dict[str, list[tuple[int, Site]]] = defaultdict(list)
        for k, sites in enumerate(patches):
            for site in sites:
                by_hook[site.hook_name].append((k, site))
        b = self.batch
        hooks = []
        for name, items in by_hook.items():
            src = self.cf[name]

            def setter(act: Tensor, hook, items=items, src=src) -> Tensor:
                for k, site in items:
                    rows = slice(k * b, (k + 1) * b)
                    pos = slice(None) if site.positions is None else list(site.positions)
                    if site.head is None:
                        act[rows, pos] = src[:, pos]
                    else:
                        act[rows, pos, site.head] = src[:, pos, site.head]
                return act

            hooks.append((name, setter))
        return hooks

    # -- activation patching -------------------------------------------------------------------

    def patch(
        self,
        patches: Sequence[Patch],
        metric: Metric | Callable | None = None,
        *,
        desc: str = "activation patching",
    ) -> PatchingResult:
        """Exact activation patching: one metric value per patch.

        Each patch (a Site or several Sites applied together) replaces its sites' clean values by
        the counterfactual ones. All input is checked before any forward runs.
        """
        plist = [_as_sites(p) for p in patches]
        if not plist:
            raise UsageError("no patches given")
        for sites in plist:
            for s in sites:
                self._check_site(s)
        last = max(max(-1 if s.kind == "embed" else s.layer for s in sites) for sites in plist)
        metric = self._prepare_metric(metric, last)
        read = metric.read_order()
        inert = [] if read is None else [i for i, sites in enumerate(plist) if min(s.order for s in sites) >= read]
        if len(inert) == len(plist):
            raise UsageError(
                f"no patch can change the metric: it reads layer {read[0]} at the latest and every "
                f"patch (e.g. {patch_name(plist[0])}) comes after that; choose later receiver layers"
            )
        clean, clean_detail = self.clean_value(metric)

        starts: dict[int, int | None] = {}
        for i, sites in enumerate(plist):
            if i not in inert:
                layers = [s.start_layer for s in sites]
                starts[i] = None if None in layers else min(layers)
        jobs = self._jobs(starts)
        values = torch.empty(len(plist))
        details: list[Tensor | None] = [None] * len(plist)
        for i in inert:  # a site after the metric's last read cannot change it: exactly clean
            values[i] = clean
            details[i] = clean_detail
        for idx in tqdm(jobs, desc=desc, disable=not self.progress, leave=False):
            chunk = [plist[i] for i in idx]
            vals, detail = self._forward(
                metric, starts=[starts[i] for i in idx], patch_hooks=self._setter_hooks(chunk)
            )
            for j, i in enumerate(idx):
                values[i] = vals[j]
                if detail is not None:
                    details[i] = detail[j]
        return PatchingResult(
            names=[patch_name(s) for s in plist],
            patches=[[s.to_dict() for s in sites] for sites in plist],
            values=values,
            clean=clean,
            metric=metric.describe(),
            counterfactual=self.counterfactual,
            detail=None if details[0] is None else torch.stack(details),  # type: ignore[arg-type]
            extra={"not_computed_after_metric": [patch_name(plist[i]) for i in inert]},
        )

    # -- path patching -------------------------------------------------------------------------

    def sender_delta(self, sender: Site) -> Float[Tensor, "batch pos d_model"]:
        """The sender's direct write into the residual stream, counterfactual minus clean, at its
        positions (zero elsewhere), with every other component frozen at its clean value.

        For a head this goes through the attention output (``z @ W_O + b_O``) and any post-
        attention norm (Gemma's ``ln1_post``) with the layer's other heads clean.
        """
        model = self.model
        self._check_site(sender)
        if sender.kind not in ("embed", "attn", "head", "mlp"):
            raise UsageError(f"a path's sender must be embed, attn, head or mlp, not {sender.kind}")
        pos = slice(None) if sender.positions is None else list(sender.positions)
        delta = torch.zeros_like(self.clean[get_act_name("resid_pre", 0)])
        if sender.kind == "head":
            block = model.blocks[sender.layer]
            z_clean = self.clean[sender.hook_name]
            z_cf = z_clean.clone()
            z_cf[:, pos, sender.head] = self.cf[sender.hook_name][:, pos, sender.head]
            with torch.inference_mode():
                out = self._attn_out_from_z(block, torch.stack([z_clean, z_cf]))
            delta[:, pos] = (out[1] - out[0])[:, pos]
        else:
            name = sender.hook_name
            delta[:, pos] = self.cf[name][:, pos] - self.clean[name][:, pos]
        return delta

    @staticmethod
    def _attn_out_from_z(block, z: Tensor) -> Tensor:
        attn = block.attn
        out = torch.einsum("...pnh,nhd->...pd", z, attn.W_O) + attn.b_O
        if block.cfg.use_normalization_before_and_after:
            out = block.ln1_post(out)
        return out

    def _check_receiver(self, receiver: Receiver, sender: Site) -> None:
        cfg = self.model.cfg
        if receiver.kind not in RECEIVER_KINDS:
            raise UsageError(f"unknown receiver kind {receiver.kind!r}; choose one of {', '.join(RECEIVER_KINDS)}")
        if not 0 <= receiver.layer < cfg.n_layers:
            raise UsageError(f"receiver layer {receiver.layer} out of range: the model has layers 0..{cfg.n_layers - 1}")
        if receiver.kind == "mlp" and cfg.attn_only:
            raise UsageError("the model is attention-only: no MLP receiver")
        if receiver.heads is not None:
            if receiver.kind == "mlp":
                raise UsageError("an MLP receiver takes no heads")
            n = cfg.n_heads
            if receiver.kind in ("k", "v") and cfg.n_key_value_heads is not None:
                n = cfg.n_key_value_heads
            bad = [h for h in receiver.heads if not 0 <= h < n]
            if bad:
                what = "KV heads" if n != cfg.n_heads else "heads"
                raise UsageError(f"receiver head index {bad} out of range: layer {receiver.layer} has {what} 0..{n - 1}")
        if not receiver.order > sender.order:
            raise UsageError(
                f"receiver {receiver.name} is not after sender {sender.name}: a path must go from an "
                "earlier component to a later layer's input"
            )

    def path_patch(
        self,
        paths: Sequence[tuple[Site, Receiver]],
        metric: Metric | Callable | None = None,
        *,
        desc: str = "path patching",
    ) -> PatchingResult:
        """IOI-style path patching: one metric value per (sender, receiver) path.

        Default metric: the sink score read at the receiver's own layer for ``q``/``k`` receivers
        (the direct effect on that layer's attention to P0) and at every later layer for ``v``
        and ``mlp`` receivers; each path gets its own receiver layers, so pass one explicit metric
        when the values must be comparable.
        """
        paths = list(paths)
        if not paths:
            raise UsageError("no paths given")
        for sender, receiver in paths:
            if not isinstance(sender, Site) or not isinstance(receiver, Receiver):
                raise UsageError("each path must be a (Site, Receiver) pair")
            self._check_site(sender)
            self._check_receiver(receiver, sender)
        if metric is None:
            # group by the default metric of each path
            by_metric: dict[tuple[int, ...], list[int]] = defaultdict(list)
            for i, (_, r) in enumerate(paths):
                layers = (r.layer,) if r.kind in ("q", "k") else tuple(range(r.layer + 1, self.model.cfg.n_layers))
                if not layers:
                    raise UsageError(f"receiver {r.name} is in the last layer: no later layer to measure")
                by_metric[layers].append(i)
            values = torch.empty(len(paths))
            cleans: list[float] = [0.0] * len(paths)
            metrics: list[dict[str, Any]] = [{}] * len(paths)
            for layers, idx in by_metric.items():
                sub = self.path_patch([paths[i] for i in idx], SinkMetric(layers), desc=desc)
                for j, i in enumerate(idx):
                    values[i] = sub.values[j]
                    cleans[i] = sub.clean
                    metrics[i] = sub.metric
            res = PatchingResult(
                names=[f"{s.name}->{r.name}" for s, r in paths],
                patches=[[s.to_dict(), r.to_dict()] for s, r in paths],
                values=values,
                clean=float("nan"),
                metric={"name": "sink_score", "definition": "per path: receiver layer (q/k) or later layers (v/mlp)"},
                counterfactual=self.counterfactual,
                kind="path",
            )
            res.extra["per_path_clean"] = cleans
            res.extra["per_path_metric"] = metrics
            return res

        last = max(r.layer for _, r in paths)
        metric = self._prepare_metric(metric, last)
        read = metric.read_order()
        if read is not None:
            for s, r in paths:
                if r.order >= read:
                    raise UsageError(
                        f"path {s.name}->{r.name} cannot change the metric: the metric reads layer "
                        f"{read[0]} at the latest, not after receiver {r.name}; choose later receiver layers"
                    )
        clean, _ = self.clean_value(metric)
        deltas = {s: self.sender_delta(s) for s in {s for s, _ in paths}}
        starts: dict[int, int | None] = {i: r.layer for i, (_, r) in enumerate(paths)}
        jobs = self._jobs(starts)
        values = torch.empty(len(paths))
        details: list[Tensor | None] = [None] * len(paths)
        need_split = any(r.kind in ("q", "k", "v") for _, r in paths)
        need_mlp = any(r.kind == "mlp" for _, r in paths)
        b = self.batch
        with _model_flags(self.model, split_qkv=need_split, mlp_in=need_mlp):
            for idx in tqdm(jobs, desc=desc, disable=not self.progress, leave=False):
                by_hook: dict[str, list[tuple[int, Receiver, Tensor]]] = defaultdict(list)
                for k, i in enumerate(idx):
                    s, r = paths[i]
                    by_hook[r.hook_name].append((k, r, deltas[s]))
                hooks = []
                for name, items in by_hook.items():

                    def adder(act: Tensor, hook, items=items) -> Tensor:
                        for k, r, d in items:
                            rows = slice(k * b, (k + 1) * b)
                            if r.kind == "mlp":
                                act[rows] = act[rows] + d
                            elif r.heads is None:
                                act[rows] = act[rows] + d[:, :, None, :]
                            else:
                                hs = list(r.heads)
                                act[rows, :, hs] = act[rows, :, hs] + d[:, :, None, :]
                        return act

                    hooks.append((name, adder))
                vals, detail = self._forward(metric, starts=[starts[i] for i in idx], patch_hooks=hooks)
                for j, i in enumerate(idx):
                    values[i] = vals[j]
                    if detail is not None:
                        details[i] = detail[j]
        return PatchingResult(
            names=[f"{s.name}->{r.name}" for s, r in paths],
            patches=[[s.to_dict(), r.to_dict()] for s, r in paths],
            values=values,
            clean=clean,
            metric=metric.describe(),
            counterfactual=self.counterfactual,
            detail=None if details[0] is None else torch.stack(details),  # type: ignore[arg-type]
            kind="path",
        )


# ---------------------------------------------------------------------------------------------
# Convenience: site lists
# ---------------------------------------------------------------------------------------------


def component_sites(
    n_layers: int,
    layers: Sequence[int] | None = None,
    *,
    positions: tuple[int, ...] | None = (0,),
    kinds: Sequence[str] = ("embed", "attn", "mlp"),
) -> list[Site]:
    """Sites for a component sweep: the embedding and each layer's ``kinds`` at ``positions``."""
    layers = range(n_layers) if layers is None else layers
    sites = [Site("embed", 0, positions=positions)] if "embed" in kinds else []
    for layer in layers:
        for kind in kinds:
            if kind != "embed":
                sites.append(Site(kind, layer, positions=positions))
    return sites


def head_sites(
    layers: Sequence[int], n_heads: int, *, positions: tuple[int, ...] | None = (0,)
) -> list[Site]:
    return [Site("head", layer, head=h, positions=positions) for layer in layers for h in range(n_heads)]
