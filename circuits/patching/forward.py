"""The engine's inside interface: what a readout's declared reads decide, and one run's reads.

``PatchEngine`` is what the engine's sibling modules (``prefix``, ``nested``, ``paths``,
``stream``, ``attribution``) may use of the ``Engine`` behind a ``Patcher``: its caches, its checks and its stacked
forward. They program against this protocol, never against the engine's private members
(``tests/unit/test_codebase.py`` checks), and the engine imports them, not the other way round.

A readout declares the hooks it reads (``circuits.patching.readouts``). From that declaration:

* ``last_read``: the forward stops right after the last read hook (even mid-block, and before
  the unembedding unless the readout reads it);
* ``can_change``: a patch whose sites all come at or after the last read cannot change the
  readout (its value is exactly the clean one);
* ``prefix_exact``: a patch inside block ``l`` after that block's attention pattern may run its
  block on the prefix alone (``circuits.patching.prefix``) only if the readout reads nothing in
  block ``l`` at or after the patch (those reads would not be computed);
* a patch whose rows join the stacked batch at block ``s`` reads its clean values at every read
  before ``s`` (``ReadPlan``): they cannot differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.backend import RESUMES_FROM_RESIDUAL, HookedModel, get_act_name
from circuits.backend.devices import home_device
from circuits.core.errors import UsageError
from circuits.core.model_lock import exclusive
from circuits.patching.hook_order import known_position, read_position
from circuits.patching.readouts import ComparedToClean, Readout, SinkScore
from circuits.patching.sites import Site

Hook = tuple[str, Callable]


class ForwardDone(Exception):
    """Raised by the hook on the readout's last read: the rest of the forward is not needed."""


def stop_forward(act: Tensor, hook) -> None:
    raise ForwardDone


def last_read(readout: Readout, model: HookedModel) -> tuple[int, float]:
    """The position (``read_position``) of the readout's last read."""
    n = model.cfg.n_layers
    return max(read_position(h, n) for h in readout.reads(model))


def can_change(sites: Sequence[Site], readout: Readout, model: HookedModel) -> bool:
    """Whether patching ``sites`` together can change the readout (some site precedes a read)."""
    return min(s.order for s in sites) < last_read(readout, model)


def prefix_exact(
    layer: int, first_order: tuple[int, float], readout: Readout, model: HookedModel
) -> bool:
    """Whether block ``layer`` may be skipped by the stacked forward (run on the prefix alone)
    for a patch whose first site is at ``first_order``: no read in that block at or after it."""
    n = model.cfg.n_layers
    for h in readout.reads(model):
        pos = read_position(h, n)
        if pos[0] == layer and pos >= first_order:
            return False
    return True


def prepare_sink_estimate(
    patcher: PatchEngine, sites: Sequence[Site], metric: Readout | None, method: str
) -> SinkScore:
    """The readout of an estimate that computes the sink score only (the P0-stream estimate,
    attribution patching), prepared for ``sites``; any other readout refused by name."""
    readout = patcher.prepare(metric, max(s.order[0] for s in sites))
    if not isinstance(readout, SinkScore):
        raise UsageError(
            f"{method} the sink score only, not {readout.name}: use exact patching "
            "(Patcher.patch) for this readout"
        )
    return readout


class ReadPlan:
    """A readout's reads during one stacked run: each read hook reduces the rows present
    (``readout.reduce``); ``finish`` fills in the clean reduction for the patches whose rows had
    not joined yet, and combines. ``clean_reduced``: hook -> clean reduction (``[...]``);
    ``clean_acts``: hook -> clean activation, for ``ComparedToClean`` readouts; with
    ``record_clean`` the run *is* the clean run and records both."""

    def __init__(
        self,
        model: HookedModel,
        readout: Readout,
        batch: int,
        *,
        clean_reduced: dict[str, Tensor],
        clean_acts: dict[str, Tensor],
        names: Sequence[str] | None = None,
        record_clean: bool = False,
    ) -> None:
        self.model, self.readout, self.batch = model, readout, batch
        self.names = tuple(readout.reads(model) if names is None else names)
        self.clean_reduced, self.clean_acts = clean_reduced, clean_acts
        self.record_clean = record_clean
        self.reduced: dict[str, Tensor] = {}
        self.home = home_device(model)  # reductions of several cards' layers meet here
        n = model.cfg.n_layers
        self.last = max(self.names, key=lambda h: read_position(h, n))
        last_pos = read_position(self.last, n)
        self.stop_layer = None if last_pos[0] >= n else last_pos[0] + 1
        # cut the forward at the last read only where that read is known to come last
        ties = [h for h in self.names if read_position(h, n) == last_pos]
        self.cut = len(ties) == 1 and known_position(self.last)

    def _on_read(self, act: Tensor, hook, *, name: str) -> None:
        # ``name`` is the read's legacy hook name (a bridge's ``hook.name`` is its own)
        chunks = act.reshape(-1, self.batch, *act.shape[1:])
        if not isinstance(self.readout, ComparedToClean):
            self.reduced[name] = self.readout.reduce(name, chunks).to(self.home)
            return
        if self.record_clean:
            self.clean_acts[name] = act[: self.batch].clone()
        reduced = self.readout.reduce(name, chunks, self.clean_acts.get(name))
        self.reduced[name] = reduced.to(self.home)

    def hooks(self) -> list[Hook]:
        hooks: list[Hook] = [(name, partial(self._on_read, name=name)) for name in self.names]
        return hooks + ([(self.last, stop_forward)] if self.cut else [])

    def finish(self, n_patches: int) -> dict[str, Tensor]:
        """Every read hook's reduction for all ``n_patches`` (clean where a patch's rows were
        absent)."""
        out = {}
        for name in self.names:
            got = self.reduced.get(name)
            if got is None and self.clean_reduced.get(name, 0) is None:
                continue  # a hook this model's forward never runs
            present = 0 if got is None else got.shape[0]
            if present < n_patches:
                if name not in self.clean_reduced:
                    raise RuntimeError(f"no clean reduction of {name} (internal error)")
                clean = self.clean_reduced[name].unsqueeze(0)
                fill = clean.expand(n_patches - present, *clean.shape[1:])
                got = fill if got is None else torch.cat([got, fill.to(got.dtype)])
            out[name] = got
        return out


def run_stacked(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    clean: dict[str, Tensor],
    plan: ReadPlan,
    *,
    starts: Sequence[int | None],
    patch_hooks: list[Hook],
    start_rows: Sequence[Tensor | None] | None,
    block_kwargs: dict[str, Tensor],
) -> None:
    """One stacked forward (``Engine.run``): patch ``k`` owns rows ``k*B .. (k+1)*B``; the
    batch starts at ``starts[0]`` and grows at each later start (a ``resid_pre`` hook appends
    the rows of the patches starting there, ``start_rows[k]`` or the clean ``resid_pre``); the
    ``plan`` reads and stops the run. Where the model cannot resume from a residual
    (``RESUMES_FROM_RESIDUAL``) every row runs from the tokens, and the given start rows are
    written over ``resid_pre`` at their start block: the same values from there on."""
    starts = list(starts)
    rows_of = list(start_rows) if start_rows is not None else [None] * len(starts)
    blocks = [s for s in starts if s is not None]
    if blocks != sorted(blocks) or 0 < len(blocks) < len(starts):
        raise RuntimeError(
            f"patch starts must be non-decreasing and not mix None: {starts} (internal error)"
        )
    n, first = len(starts), starts[0]
    if not RESUMES_FROM_RESIDUAL:
        _from_tokens(model, tokens, plan, starts, rows_of, patch_hooks)
        return

    def rows_at(layer: int) -> Tensor:
        resid = clean[get_act_name("resid_pre", layer)]
        mine = [r for s, r in zip(starts, rows_of, strict=True) if s == layer]
        if all(r is None for r in mine):
            return resid.repeat(len(mine), 1, 1)
        return torch.cat([resid if r is None else r for r in mine])

    joins: list[Hook] = []
    if first is not None:
        for layer in sorted(set(blocks))[1:]:
            rows = rows_at(layer)

            def join(act: Tensor, hook, rows=rows) -> Tensor:
                return torch.cat([act, rows])

            joins.append((get_act_name("resid_pre", layer), join))
    hooks = joins + patch_hooks + plan.hooks()  # same-hook order: join, patch, read, stop
    kwargs: dict[str, Any] = {"fwd_hooks": hooks, "stop_at_layer": plan.stop_layer}
    with exclusive(model), torch.inference_mode():
        try:
            if first is None:
                model.run_with_hooks(tokens.repeat(n, 1), return_type=None, **kwargs)
            else:
                model.run_with_hooks(
                    rows_at(first),
                    return_type=None,
                    start_at_layer=first,
                    **kwargs,
                    **block_kwargs,
                )
        except ForwardDone:
            pass


def _start_row_hooks(starts: Sequence[int | None], rows_of: Sequence[Tensor | None], batch: int):
    """Hooks writing each given start row block over ``resid_pre`` at its patch's start."""
    by_layer: dict[int, list[tuple[int, Tensor]]] = {}
    for k, (s, r) in enumerate(zip(starts, rows_of, strict=True)):
        if s is not None and r is not None:
            by_layer.setdefault(s, []).append((k, r))
    hooks: list[Hook] = []
    for layer, given in by_layer.items():

        def inject(act: Tensor, hook, given=given) -> Tensor:
            act = act.clone()
            for k, rows in given:
                act[k * batch : (k + 1) * batch] = rows
            return act

        hooks.append((get_act_name("resid_pre", layer), inject))
    return hooks


def _from_tokens(
    model: HookedModel,
    tokens: Tensor,
    plan: ReadPlan,
    starts: Sequence[int | None],
    rows_of: Sequence[Tensor | None],
    patch_hooks: list[Hook],
) -> None:
    """``run_stacked`` on a model that runs from the tokens only: every patch's rows from
    block 0 (``RESUMES_FROM_RESIDUAL``)."""
    inject = _start_row_hooks(starts, rows_of, tokens.shape[0])
    hooks = inject + patch_hooks + plan.hooks()  # same-hook order: inject, patch, read, stop
    with exclusive(model), torch.inference_mode():
        try:
            model.run_with_hooks(
                tokens.repeat(len(starts), 1),
                return_type=None,
                fwd_hooks=hooks,
                stop_at_layer=plan.stop_layer,
            )
        except ForwardDone:
            pass


@runtime_checkable
class PatchEngine(Protocol):
    """What the engine's sibling modules use of an ``Engine`` (module docstring)."""

    model: HookedModel
    tokens: Int[Tensor, "batch pos"]
    batch: int
    n_pos: int
    max_rows: int
    progress: bool
    clean: dict[str, Tensor]
    cf: dict[str, Tensor]
    counterfactual: Any

    conditions: tuple[Any, ...]

    def conditioned(self) -> Any: ...

    def check_site(self, site: Site) -> None: ...

    def prepare(self, metric: Readout | Callable | None, last_layer: int) -> Readout: ...

    def clean_value(self, metric: Readout) -> tuple[float, Tensor | None]: ...

    def run(
        self,
        metric: Readout,
        *,
        starts: Sequence[int | None],
        patch_hooks: list[Hook],
        start_rows: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor | None]: ...

    def forward_groups(self, starts: dict[int, int | None]) -> list[list[int]]: ...

    def counterfactual_hooks(self, patches: list[tuple[Site, ...]]) -> list[Hook]: ...

    def block_kwargs(self, n_pos: int | None = None) -> dict[str, Tensor]: ...

    def patch(self, patches: Sequence[Any], metric: Any = None, *, desc: str = ...) -> Any: ...
