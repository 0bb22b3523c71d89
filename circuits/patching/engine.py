"""The patching engine: exact activation patching at position zero, batched and truncated.

The question, in the paper's terms: *which components' outputs at position 0 (P0) make the
later layers' heads attend to P0?* A patch replaces a component's output at P0 by its
counterfactual value (see ``circuits.patching.counterfactuals``: ``shift``, ``mean`` or ``zero``), the
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
* a patch that changes its block's output only at the first positions (a head, attention or
  MLP output at P0) runs that block on the prefix alone and starts the stacked forward at the
  next block (``circuits.patching.prefix``; for the sink metric);
* many patches share one forward: patch ``k`` owns rows ``k*B .. (k+1)*B`` of a stacked batch,
  and the batch *grows* with depth: a patch's rows join at the block where it starts (from the
  cached clean ``resid_pre``), so patches starting at different layers (a resid_pre grid has one
  per layer) still share one forward without recomputing any clean block;
* glibc is told to keep freed activation memory (``circuits.patching.allocator``): a batched forward
  reuses its large buffers instead of page-faulting fresh ones in every block;
* numbers equal TransformerLens' ``transformer_lens.patching`` functions where they run the same
  experiment (tests check max |diff| <= 1e-4).

Path patching (``Patcher.path_patch``) is in ``circuits.patching.paths``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from circuits.core.conventions import check_counterfactual
from circuits.core.errors import UsageError
from circuits.metrics.attention import check_pattern
from circuits.metrics.residual import check_finite
from circuits.patching.allocator import keep_freed_memory
from circuits.patching.counterfactuals import counterfactual_values
from circuits.patching.prefix import plan_prefixes, prefix_start_rows
from circuits.patching.readouts import CacheMetric, Metric, SinkMetric
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Patch, Receiver, Site, as_sites, check_site, patch_name
from circuits.prompts import check_tokens

_CACHED_ACTS = ("resid_pre", "z", "attn_out", "resid_mid", "mlp_out", "resid_post")  # forward order


class _ForwardDone(Exception):
    """Raised by the hook on the metric's last read: the rest of the forward is not needed."""


def _stop_forward(act: Tensor, hook) -> None:
    raise _ForwardDone


class Patcher:
    """Clean and counterfactual activations of ``model`` on ``tokens``, and patched runs on them.

    ``tokens``: ``[batch, pos]`` prompts of equal length, no padding (position 0 is each row's
    real first token). ``counterfactual``: ``shift`` | ``mean`` | ``zero``. ``max_rows``: the
    largest stacked batch one forward may use (``n_patches_per_forward * batch``).
    ``prefix_blocks``: run the patched block on the prefix alone where that is exact
    (``circuits.patching.prefix``; False: the whole block, for comparisons).
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
        prefix_blocks: bool = True,
    ) -> None:
        check_counterfactual(counterfactual)
        keep_freed_memory()
        tokens = check_tokens(tokens, model.cfg)
        if max_rows < 1:
            raise UsageError("max_rows must be >= 1")
        self.model = model
        self.tokens = tokens.to(model.cfg.device)
        self.counterfactual = counterfactual
        self.shift_token = shift_token
        self.max_rows = max_rows
        self.progress = progress
        self.prefix_blocks = prefix_blocks
        self.batch, self.n_pos = tokens.shape
        cfg = model.cfg
        names = [get_act_name("embed")]
        for layer in range(cfg.n_layers):
            for act in _CACHED_ACTS:
                if act in ("resid_mid", "mlp_out") and cfg.attn_only:
                    continue
                if act == "resid_mid" and cfg.parallel_attn_mlp:  # no resid_mid in such a block
                    continue
                names.append(get_act_name(act, layer))
        self._check_hooks(names)
        # TransformerLens zeroes a NaN pattern: check every pattern as the clean runs go
        sinks = bool(cfg.use_attention_sinks)

        def check(pattern: Tensor, hook) -> None:
            check_pattern(pattern, hook.name, sinks=sinks)

        checks = [(get_act_name("pattern", la), check) for la in range(cfg.n_layers)]
        wanted = set(names) | {"hook_pos_embed"}
        with torch.inference_mode(), model.hooks(fwd_hooks=checks):
            _, cache = model.run_with_cache(
                self.tokens, return_type=None, names_filter=lambda n: n in wanted
            )
            self.clean: dict[str, Tensor] = {n: cache[n] for n in names}
            # shortformer positions enter every layer's queries and keys, not the residual: a
            # forward started at a block must be given them (the same for every row)
            self._forward_kwargs = (
                {"shortformer_pos_embed": cache["hook_pos_embed"][:1]}
                if cfg.positional_embedding_type == "shortformer"
                else {}
            )
            self.cf: dict[str, Tensor] = counterfactual_values(
                model, self.tokens, self.clean, counterfactual, names, shift_token=shift_token
            )
        for name in names:  # forward order: the first broken hook is named
            check_finite(self.clean[name], f"{name} (clean run)")
            check_finite(self.cf[name], f"{name} ({counterfactual} counterfactual)")
        self._clean_metric: dict[int, tuple[float, Tensor | None]] = {}
        self._clean_sink: dict[int, Tensor] | None = None

    # -- validation ---------------------------------------------------------------------------

    def _check_hooks(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.model.hook_dict]
        if missing:
            raise UsageError(
                f"hook(s) {missing[:3]} not found on the model: is it a HookedTransformer?"
            )

    def _check_site(self, site: Site) -> None:
        check_site(site, self.model.cfg, self.n_pos)

    def _prepare_metric(self, metric: Metric | Callable | None, last_layer: int) -> Metric:
        if metric is None:
            metric = SinkMetric()
        if not isinstance(metric, Metric):
            if callable(metric):
                metric = CacheMetric(metric)
            else:
                raise UsageError(
                    f"metric must be a Metric or a callable on the cache, got {type(metric).__name__}"
                )
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
                probe.validate(self.model, self.n_pos)
                self._forward(probe, starts=[None], patch_hooks=[])
                self._clean_sink = probe.clean_per_layer()
            metric.set_clean({r: self._clean_sink[r] for r in metric.layers})
            detail = torch.stack([self._clean_sink[r].float().mean() for r in metric.layers])
            return float(detail.mean()), detail
        key = id(metric)
        if key not in self._clean_metric:
            values, detail = self._forward(metric, starts=[None], patch_hooks=[])
            self._clean_metric[key] = (float(values[0]), None if detail is None else detail[0])
        return self._clean_metric[key]

    def clean_sink_per_layer(self) -> list[float]:
        """Clean sink score (mean over heads and prompts) of every layer, from the one clean run
        that serves every ``SinkMetric``."""
        self.clean_value(SinkMetric(range(self.model.cfg.n_layers)))
        assert self._clean_sink is not None
        return [float(self._clean_sink[r].float().mean()) for r in range(self.model.cfg.n_layers)]

    # -- forwards ------------------------------------------------------------------------------

    def _forward(
        self,
        metric: Metric,
        *,
        starts: Sequence[int | None],
        patch_hooks: list[tuple[str, Callable]],
        start_rows: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Run one stacked batch, patch ``k`` owning rows ``k*B .. (k+1)*B``, up to the metric's
        last read (``Metric.last_hook``, else the end of its last block), with ``patch_hooks``
        applied, and return the metric per patch.

        ``starts[k]`` is the block where patch ``k`` first differs from the clean run (None: from
        the tokens, for every patch or none); ``start_rows[k]`` its ``resid_pre`` there (None:
        the cached clean one). The batch *grows*: the run starts at ``starts[0]`` with the rows
        of the patches that start there, and at each later start a hook on ``resid_pre``
        appends the rows of the patches starting at that block. No row computes a block whose
        output equals the clean one, and one-patch-per-layer grids (resid_pre) still fill a batch.
        """
        starts = list(starts)
        rows_of = list(start_rows) if start_rows is not None else [None] * len(starts)
        blocks = [s for s in starts if s is not None]
        if blocks != sorted(blocks) or 0 < len(blocks) < len(starts):
            raise RuntimeError(
                f"patch starts must be non-decreasing and not mix None: {starts} (internal error)"
            )
        model = self.model
        n, first = len(starts), starts[0]
        metric.begin(n, self.batch, first)

        def rows_at(layer: int) -> Tensor:
            clean = self.clean[get_act_name("resid_pre", layer)]
            mine = [r for s, r in zip(starts, rows_of, strict=True) if s == layer]
            if all(r is None for r in mine):
                return clean.repeat(len(mine), 1, 1)
            return torch.cat([clean if r is None else r for r in mine])

        joins: list[tuple[str, Callable]] = []
        if first is not None:
            for layer in sorted(set(blocks))[1:]:
                rows = rows_at(layer)

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
                    model.run_with_hooks(
                        self.tokens.repeat(n, 1), fwd_hooks=hooks, stop_at_layer=stop
                    )
                else:
                    model.run_with_hooks(
                        rows_at(first),
                        fwd_hooks=hooks,
                        start_at_layer=first,
                        stop_at_layer=stop,
                        **self._forward_kwargs,
                    )
            except _ForwardDone:
                pass
        return metric.finish()

    def _jobs(self, starts: dict[int, int | None]) -> list[list[int]]:
        """Split patches (index -> start block) into forwards of at most ``max_rows`` rows, in
        order of start so that each forward's batch only grows (patches from the tokens apart)."""
        per_forward = max(1, self.max_rows // self.batch)
        from_tokens = [i for i, s in starts.items() if s is None]
        from_blocks = sorted(
            (i for i, s in starts.items() if s is not None), key=lambda i: (starts[i], i)
        )
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
        plist = [as_sites(p) for p in patches]
        if not plist:
            raise UsageError("no patches given")
        for sites in plist:
            for s in sites:
                self._check_site(s)
        last = max(max(-1 if s.kind == "embed" else s.layer for s in sites) for sites in plist)
        metric = self._prepare_metric(metric, last)
        read = metric.read_order()
        inert = (
            []
            if read is None
            else [i for i, sites in enumerate(plist) if min(s.order for s in sites) >= read]
        )
        if read is not None and len(inert) == len(plist):
            raise UsageError(
                f"no patch can change the metric: it reads layer {read[0]} at the latest and every "
                f"patch (e.g. {patch_name(plist[0])}) comes after that; choose later receiver layers"
            )
        clean, clean_detail = self.clean_value(metric)

        starts: dict[int, int | None] = {}
        for i, sites in enumerate(plist):
            if i not in inert:
                layers = [s.start_layer for s in sites]
                starts[i] = None if None in layers else min(la for la in layers if la is not None)
        # patch -> (block, prefix); those start a block later (circuits.patching.prefix)
        prefixed = plan_prefixes(self, plist, starts, metric) if self.prefix_blocks else {}
        jobs = self._jobs(starts)
        values = torch.empty(len(plist))
        details: list[Tensor | None] = [None] * len(plist)
        for i in inert:  # a site after the metric's last read cannot change it: exactly clean
            values[i] = clean
            details[i] = clean_detail
        for idx in tqdm(jobs, desc=desc, disable=not self.progress, leave=False):
            rows = prefix_start_rows(self, idx, plist, prefixed)
            chunk = [() if i in prefixed else plist[i] for i in idx]  # prefixed: set already
            vals, detail = self._forward(
                metric,
                starts=[starts[i] for i in idx],
                patch_hooks=self._setter_hooks(chunk),
                start_rows=[rows.get(i) for i in idx],
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

    # -- path patching (circuits.patching.paths) -----------------------------------------------

    def sender_delta(self, sender: Site) -> Float[Tensor, "batch pos d_model"]:
        """The sender's direct write at its positions, counterfactual minus clean (see
        ``circuits.patching.paths.sender_delta``)."""
        from circuits.patching.paths import sender_delta

        return sender_delta(self, sender)

    def path_patch(
        self,
        paths: Sequence[tuple[Site, Receiver]],
        metric: Metric | Callable | None = None,
        *,
        desc: str = "path patching",
    ) -> PatchingResult:
        """IOI-style path patching: one metric value per (sender, receiver) path (see
        ``circuits.patching.paths.path_patch``)."""
        from circuits.patching.paths import path_patch

        return path_patch(self, paths, metric, desc=desc)
