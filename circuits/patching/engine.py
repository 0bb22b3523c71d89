"""The patching engine: exact activation patching at position zero, batched and truncated.

The question, in the paper's terms: *which components' outputs at position 0 (P0) make the
later layers' heads attend to P0?* A patch replaces a component's output at P0 by its
counterfactual value (a ``circuits.patching.counterfactuals.Counterfactual``: the P0 recipes
``shift``, ``mean``, ``zero``, a chosen first token, a counterfactual prompt set or cached values),
the model runs on, and a readout reads the result (``circuits.patching.readouts``: the Gu et al.
sink score of the receiver layers, attention to P0, P0's residual norm, any callable on named
hooks; ``circuits.patching.output_readouts``: next-token loss, logit difference, KL).

Engine (``Engine``, behind the public ``circuits.patching.patcher.Patcher``):

* one clean run caches every residual stream and component output; a patch whose first site is
  in layer ``l`` starts the forward at block ``l`` from the cached clean ``resid_pre[l]``
  (``HookedTransformer.forward(start_at_layer=l)``): the layers below are never recomputed;
* the run stops at the readout's last declared read: for the sink metric, right after the last
  receiver layer's attention pattern (its z, attention output and MLP are never computed); the
  unembedding runs only for the rows an output readout reads;
* a patch that changes its block's output only at the first positions (a head, attention or
  MLP output at P0) runs that block on the prefix alone and starts the stacked forward at the
  next block (``circuits.patching.prefix``), wherever the readout reads nothing in that block
  after the patch (``circuits.patching.forward`` decides every shortcut from the reads);
* many patches share one forward: patch ``k`` owns rows ``k*B .. (k+1)*B`` of a stacked batch,
  and the batch *grows* with depth: a patch's rows join at the block where it starts (from the
  cached clean ``resid_pre``), so patches starting at different layers (a resid_pre grid has one
  per layer) still share one forward without recomputing any clean block;
* a caller that runs many patches may keep freed activation memory for the next forward
  (``circuits.patching.allocator.keep_freed_memory``: ``discover``, the panel and the trace do);
  building a ``Patcher`` changes no process-wide setting;
* numbers equal TransformerLens' ``transformer_lens.patching`` functions where they run the same
  experiment (tests check max |diff| <= 1e-4).

Path patching is in ``circuits.patching.paths``. ``Engine``'s methods are the package's own:
the patching modules reach it through ``circuits.patching.patcher.engine_of``; users call
``Patcher.patch``, ``Patcher.path_patch`` and ``Patcher.clean_value``. Clean values are
computed once per hook and question (``readouts.question_key``), never by object identity.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits import backend
from circuits.backend import HookedModel, get_act_name, learned_attention_sinks
from circuits.backend.experts import EXPERT_OUT, experts_unavailable, expose_experts
from circuits.core.errors import UsageError
from circuits.core.model_lock import exclusive
from circuits.metrics.attention import check_pattern
from circuits.metrics.residual import check_finite
from circuits.patching.counterfactuals import Counterfactual, resolve_counterfactual
from circuits.patching.forward import Hook, ReadPlan, can_change, run_stacked
from circuits.patching.positions import Condition, HeldConditions
from circuits.patching.prefix import plan_prefixes, prefix_start_rows
from circuits.patching.readouts import (
    ComparedToClean,
    Readout,
    as_readout,
    question_key,
)
from circuits.patching.results import PatchingResult
from circuits.patching.sites import (
    Patch,
    Site,
    as_sites,
    cached_hooks,
    check_site,
    patch_name,
)
from circuits.prompts import check_tokens


class Engine:
    """The clean and counterfactual caches of ``model`` on ``tokens``, and the stacked, truncated
    forwards that patch them (module docstring). Arguments as ``Patcher``'s, checked there."""

    def __init__(
        self,
        model: HookedModel,
        tokens: Int[Tensor, "batch pos"],
        counterfactual: str | Counterfactual = "shift",
        *,
        shift_token: int | None = None,
        max_rows: int = 64,
        progress: bool = False,
        prefix_blocks: bool = True,
        conditions: Sequence[Condition] = (),
    ) -> None:
        expose_experts(model)  # an MoE block's experts as hooks (the same outputs)
        cf = resolve_counterfactual(counterfactual, model, shift_token=shift_token)
        pad = getattr(model.tokenizer, "pad_token_id", None)
        tokens = check_tokens(tokens, model.cfg, pad_token_id=pad)
        if max_rows < 1:
            raise UsageError("max_rows must be >= 1")
        self.model = model
        self.tokens = tokens.to(model.cfg.device)
        self.counterfactual: Counterfactual = cf
        self.max_rows = max_rows
        self.progress = progress
        self.conditions = tuple(conditions)
        self.conditioned = HeldConditions(model, self.conditions, tokens.shape[1])
        # a block run on the prefix alone would not see a condition's later positions
        self.prefix_blocks = prefix_blocks and backend.RESUMES_FROM_RESIDUAL and not conditions
        self.batch, self.n_pos = tokens.shape
        cfg = model.cfg
        names = cached_hooks(model)
        self._check_hooks(names)
        # an MoE block's per-expert contributions (n_experts x d_model a token) are cached when
        # an expert site of that block is first used (_cache_expert_hook), not for every block
        names = [n for n in names if not n.endswith(EXPERT_OUT)]
        # TransformerLens zeroes a NaN pattern: check every pattern as the clean runs go
        sinks = learned_attention_sinks(cfg)

        def check(pattern: Tensor, hook) -> None:
            check_pattern(pattern, hook.name, sinks=sinks)

        checks = [(get_act_name("pattern", la), check) for la in range(cfg.n_layers)]
        wanted = set(names) | {"hook_pos_embed"}
        with self.conditioned(), torch.inference_mode(), model.hooks(fwd_hooks=checks):
            _, cache = model.run_with_cache(
                self.tokens, return_type=None, names_filter=lambda n: n in wanted
            )
            self.clean: dict[str, Tensor] = {n: cache[n] for n in names}
            # shortformer positions enter every layer's queries and keys, not the residual: a
            # forward started at a block must be given them (the same for every row)
            self._block_kwargs = (
                {"shortformer_pos_embed": cache["hook_pos_embed"][:1]}
                if cfg.positional_embedding_type == "shortformer"
                else {}
            )
            self.cf: dict[str, Tensor] = cf.values(model, self.tokens, self.clean, names)
        for name in names:  # forward order: the first broken hook is named
            check_finite(self.clean[name], f"{name} (clean run)")
            check_finite(self.cf[name], f"{name} ({cf.spec} counterfactual)")
        # clean reductions per (reduction key, hook), clean activations of read hooks
        self._clean_reduced: dict[Any, dict[str, Tensor]] = defaultdict(dict)
        self._clean_acts: dict[str, Tensor] = {}

    # -- validation ---------------------------------------------------------------------------

    def _check_hooks(self, names: Sequence[str]) -> None:
        if missing := [n for n in names if n not in self.model.hook_dict]:
            raise UsageError(f"hook(s) {missing[:3]} not found on the model: is it hooked?")

    def check_site(self, site: Site) -> None:
        """A ``UsageError`` unless ``site`` exists on this model and prompt length."""
        check_site(site, self.model.cfg, self.n_pos)
        if site.kind == "expert":
            if why := experts_unavailable(self.model):
                raise UsageError(f"{site.name}: {why}")
            self._cache_expert_hook(site.hook_name, site.layer)

    def _cache_expert_hook(self, name: str, layer: int) -> None:
        """The clean and counterfactual per-expert contributions of block ``layer``, computed
        the first time one of its experts is patched (a clean forward up to that block)."""
        if name in self.clean:
            return
        model = self.model
        with exclusive(model), torch.inference_mode():
            _, cache = model.run_with_cache(
                self.tokens,
                return_type=None,
                names_filter=lambda n: n == name,
                stop_at_layer=layer + 1,
            )
            clean = cache[name]
            cf = self.counterfactual.values(model, self.tokens, {name: clean}, [name])[name]
        check_finite(clean, f"{name} (clean run)")
        check_finite(cf, f"{name} ({self.counterfactual.spec} counterfactual)")
        self.clean[name], self.cf[name] = clean, cf

    def prepare(
        self, metric: Readout | Callable | None, last_layer: int, *, clean: bool = True
    ) -> Readout:
        """The readout for patches up to ``last_layer``, its defaults resolved, checked against
        the model and prompts, and (``clean``) its clean reductions computed: a clean forward
        the first time a hook is read with that reduction."""
        readout = as_readout(metric)
        readout.check(self.model, self.tokens)
        if clean:
            self._ensure_clean(readout)
        return readout

    # -- clean value ---------------------------------------------------------------------------

    def _ensure_clean(self, readout: Readout) -> dict[str, Tensor]:
        store = self._clean_reduced[question_key(readout)]
        reads = readout.reads(self.model)
        missing = [
            h
            for h in reads
            if h not in store
            or (isinstance(readout, ComparedToClean) and h not in self._clean_acts)
        ]
        if missing:
            plan = ReadPlan(
                self.model,
                readout,
                self.batch,
                clean_reduced=store,
                clean_acts=self._clean_acts,
                names=missing,
                record_clean=True,
            )
            self._run_plan(plan, starts=[None], patch_hooks=[], start_rows=None)
            for h in missing:  # None: a hook this model's forward never runs
                store[h] = plan.reduced[h][0] if h in plan.reduced else None
        return store

    def clean_value(self, readout: Readout | Callable) -> tuple[float, Tensor | None]:
        with self.conditioned():
            return self._clean_value(readout)

    def _clean_value(self, readout: Readout | Callable) -> tuple[float, Tensor | None]:
        """The readout on the unpatched run (from the clean reductions of its reads)."""
        readout = as_readout(readout)
        readout.check(self.model, self.tokens)
        store = self._ensure_clean(readout)
        reads = [h for h in readout.reads(self.model) if store[h] is not None]
        values, detail = readout.combine({h: store[h][None] for h in reads})
        return float(values[0]), None if detail is None else detail[0]

    # -- forwards ------------------------------------------------------------------------------

    def run(
        self,
        metric: Readout,
        *,
        starts: Sequence[int | None],
        patch_hooks: list[Hook],
        start_rows: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Run one stacked batch, patch ``k`` owning rows ``k*B .. (k+1)*B``, up to the
        readout's last read, with ``patch_hooks`` applied; the readout per patch.

        ``metric`` must come from ``prepare``. ``starts[k]`` is the block where patch ``k``
        first differs from the clean run (None: from the tokens, for every patch or none);
        ``start_rows[k]`` its ``resid_pre`` there (None: the cached clean one). The batch
        *grows*: the run starts at ``starts[0]`` with the rows of the patches that start there,
        and at each later start a hook on ``resid_pre`` appends the rows of the patches starting
        at that block; reads before a patch's start take its clean values. No row computes a
        block whose output equals the clean one.
        """
        plan = ReadPlan(
            self.model,
            metric,
            self.batch,
            clean_reduced=self._clean_reduced[question_key(metric)],
            clean_acts=self._clean_acts,
        )
        self._run_plan(plan, starts=starts, patch_hooks=patch_hooks, start_rows=start_rows)
        return metric.combine(plan.finish(len(starts)))

    def _run_plan(
        self,
        plan: ReadPlan,
        *,
        starts: Sequence[int | None],
        patch_hooks: list[Hook],
        start_rows: Sequence[Tensor | None] | None,
    ) -> None:
        run_stacked(
            self.model,
            self.tokens,
            self.clean,
            plan,
            starts=starts,
            patch_hooks=patch_hooks,
            start_rows=start_rows,
            block_kwargs=self._block_kwargs,
        )

    def block_kwargs(self, n_pos: int | None = None) -> dict[str, Tensor]:
        """Extra arguments of a forward started at a block (shortformer positions), for its
        first ``n_pos`` positions (None: all)."""
        return {k: v if n_pos is None else v[:, :n_pos] for k, v in self._block_kwargs.items()}

    def forward_groups(self, starts: dict[int, int | None]) -> list[list[int]]:
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

    def counterfactual_hooks(self, patches: list[tuple[Site, ...]]) -> list[Hook]:
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
                    if site.unit is None:
                        act[rows, pos] = src[:, pos]
                    else:
                        act[rows, pos, site.unit] = src[:, pos, site.unit]
                return act

            hooks.append((name, setter))
        return hooks

    # -- activation patching -------------------------------------------------------------------

    def patch(
        self,
        patches: Sequence[Patch],
        readout: Readout | Callable | None = None,
        *,
        desc: str = "activation patching",
    ) -> PatchingResult:
        """``Patcher.patch`` (its arguments checked there), under the engine's conditions."""
        with self.conditioned():
            return self._patch(patches, readout, desc=desc)

    def _patch(
        self,
        patches: Sequence[Patch],
        readout: Readout | Callable | None = None,
        *,
        desc: str = "activation patching",
    ) -> PatchingResult:
        """``Patcher.patch`` (its arguments checked there): every site checked, then the
        patches grouped into growing stacked forwards by the block where each starts."""
        plist = [as_sites(p) for p in patches]
        if not plist:
            raise UsageError("no patches given")
        for sites in plist:
            for s in sites:
                self.check_site(s)
        last = max(max(s.order[0] for s in sites) for sites in plist)
        readout = self.prepare(readout, last, clean=False)  # nothing runs before the checks
        inert = [i for i, sites in enumerate(plist) if not can_change(sites, readout, self.model)]
        if len(inert) == len(plist):
            raise UsageError(
                f"no patch can change the readout: every read comes before every patch (e.g. "
                f"{patch_name(plist[0])}); choose later receiver layers or earlier sites"
            )
        clean, clean_detail = self.clean_value(readout)

        starts: dict[int, int | None] = {}
        for i, sites in enumerate(plist):
            if i not in inert:
                layers = [s.start_layer for s in sites]
                starts[i] = None if None in layers else min(la for la in layers if la is not None)
        # patch -> (block, prefix); those start a block later (circuits.patching.prefix)
        prefixed = plan_prefixes(self, plist, starts, readout) if self.prefix_blocks else {}
        values = torch.empty(len(plist))
        details: list[Tensor | None] = [None] * len(plist)
        for i in inert:  # no site before the readout's last read: exactly clean
            values[i] = clean
            details[i] = clean_detail
        jobs = self.forward_groups(starts)
        for idx in tqdm(jobs, desc=desc, disable=not self.progress, leave=False):
            rows = prefix_start_rows(self, idx, plist, prefixed)
            chunk = [() if i in prefixed else plist[i] for i in idx]  # prefixed: set already
            vals, detail = self.run(
                readout,
                starts=[starts[i] for i in idx],
                patch_hooks=self.counterfactual_hooks(chunk),
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
            metric=readout.describe(),
            counterfactual=self.counterfactual.describe(),
            detail=None if details[0] is None else torch.stack(details),  # type: ignore[arg-type]
            extra={"not_computed_after_metric": [patch_name(plist[i]) for i in inert]},
        )
