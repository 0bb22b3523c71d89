"""``explore(...)``: the live P0 patching panel, an anywidget.

Why anywidget: one small, well-kept library whose widgets run unchanged in JupyterLab 4,
Notebook 7, VS Code and Colab; the front end is one ES module shipped inside this package
(``panel.js``, ``panel.css``), so nothing loads from a CDN. The Python side (this module) owns
every number: the front end only draws what it is sent and reports clicks.

A click changes ``selected``; the panel then answers in stages on a worker thread (the kernel
stays responsive and the controls stay live; a newer click supersedes an older one):

1. the estimate (labelled as such): clean sink + the selection's single P0-stream estimates;
2. the exact per-layer readout with the selection patched;
3. the selection's faithfulness (kept / ablated) and the chosen receiver head's pattern before
   and after, or in path mode each sender's path into the chosen receiver input.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from pathlib import Path
from typing import Annotated, Any, Literal

import anywidget
import traitlets
from jaxtyping import Int
from pydantic import Field
from torch import Tensor

from circuits.backend import HookedModel
from circuits.core.arguments import Count, Index, NonEmpty, checked
from circuits.core.errors import UsageError
from circuits.panel.export import check_export_target, next_free, write_export
from circuits.panel.session import (
    PATH_KINDS,
    PATH_LABELS,
    READOUTS,
    PatchSession,
    selection_effects,
)
from circuits.panel.sources import PanelSource, panel_source
from circuits.patching.positions import Condition
from circuits.patching.readouts import SinkScore
from circuits.viz.style import effect_limit, effect_rgb
from circuits.viz.views import bundle_js, mark_p0
from circuits.zoo.model import ZooModel

HERE = Path(__file__).parent
_LIVE_PANELS: weakref.WeakSet[ExplorePanel] = weakref.WeakSet()


# the status line under each of the session's answer stages (PatchSession.answer_stages)
_STAGE_STATUS = {
    "clean": "clean",
    "estimate": "estimate shown; exact patch running",
    "exact curve": "exact per-layer readout; faithfulness running",
    "exact": "exact",
}


@atexit.register
def _stop_panels() -> None:
    """At interpreter exit: cancel every panel's answer and wait for its worker, so that no
    thread is inside the model when the interpreter tears down (which aborts the process)."""
    for panel in list(_LIVE_PANELS):
        panel.close_workers()


class ExplorePanel(anywidget.AnyWidget):
    """The widget (``explore`` builds it). Synced state, all plain JSON."""

    _esm = HERE / "panel.js"
    _css = HERE / "panel.css"

    title = traitlets.Unicode("").tag(sync=True)
    n_layers = traitlets.Int(0).tag(sync=True)
    n_heads = traitlets.Int(0).tag(sync=True)
    n_experts = traitlets.Int(0).tag(sync=True)
    components: traitlets.List = traitlets.List().tag(sync=True)
    effects_kind = traitlets.Unicode("").tag(sync=True)
    # what the map's colours show: the quantity, and the colour scale's limit (% of clean)
    effects_label = traitlets.Unicode("").tag(sync=True)
    effects_scale = traitlets.Float(0.0).tag(sync=True)
    # the value axis of the readout chart (the readout's own ``axis``)
    readout_axis = traitlets.Unicode("").tag(sync=True)
    selected: traitlets.List = traitlets.List().tag(sync=True)
    counterfactual = traitlets.Unicode("shift").tag(sync=True)
    readout = traitlets.Unicode("sink score").tag(sync=True)
    receivers: traitlets.List = traitlets.List().tag(sync=True)
    head = traitlets.List([0, 0]).tag(sync=True)
    path_mode = traitlets.Unicode("").tag(sync=True)
    path_layer = traitlets.Int(0).tag(sync=True)
    result = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    export_request = traitlets.Int(0).tag(sync=True)
    exported = traitlets.Unicode("").tag(sync=True)
    tokens: traitlets.List = traitlets.List().tag(sync=True)
    # the controls' choices, from the Python registries (the front end has no list of its own)
    readout_choices: traitlets.List = traitlets.List().tag(sync=True)
    path_choices: traitlets.List = traitlets.List().tag(sync=True)
    # circuitsvis' own browser bundle from its wheel, sent once: the head patterns are drawn with
    # its AttentionHeads element, offline
    circuitsvis_js = traitlets.Unicode("").tag(sync=True)

    def __init__(self, source: PanelSource, *, export_dir: str | os.PathLike | None = None):
        super().__init__()
        self.source = source
        self.export_dir = Path(export_dir) if export_dir is not None else Path("panel_selection")
        self._lock = threading.Lock()
        # one answer at a time per panel (its session's caches); the model's own lock
        # (circuits.core.model_lock) keeps other panels' and patchers' hooks out of each forward
        self._session_lock = threading.Lock()
        self._restoring = False
        self._generation = 0
        self._workers: list[threading.Thread] = []
        self.session = source.session()
        cfg = self.session.model.cfg
        self.title = f"{source.name}: {self.session.patcher.batch} prompts x {self.session.patcher.n_pos} tokens"
        if source.conditions:  # the panel says when the model runs under a condition
            held = "; ".join(c.describe()["name"] for c in source.conditions)
            self.title += f", every forward under {held}"
        self.n_layers, self.n_heads = cfg.n_layers, cfg.n_heads
        self.n_experts = len({s.expert for s in self.session.experts})
        self.counterfactual = self.session.patcher.counterfactual.spec
        self.receivers = list(self.session.receivers)
        self.head = list(self.session.head)
        self.path_layer = max(self.session.receivers)
        self.tokens = mark_p0(source.zm.str_tokens(source.tokens[0]))
        self.circuitsvis_js = bundle_js()
        self.readout_choices = list(READOUTS)
        self.path_choices = [["", "activation patch"], *([k, PATH_LABELS[k]] for k in PATH_KINDS)]
        self._effects: dict[str, float] = dict(source.effects)
        self._partial: dict[str, float] = {}  # exact single effects computed so far
        self._set_components("exact" if source.effects else "estimate")
        self.observe(self._on_question, names=["selected", "path_mode", "path_layer", "head"])
        self.observe(self._on_rebuild, names=["counterfactual", "readout", "receivers"])
        self.observe(self._on_export, names=["export_request"])
        _LIVE_PANELS.add(self)
        self._schedule(first=not source.effects)

    # -- the map -------------------------------------------------------------------------------

    def _set_components(self, kind: str) -> None:
        session = self.session
        sink = isinstance(session.readout, SinkScore)
        # the P0-stream estimate is of the sink score: on another readout only exact effects
        estimates = session.single_estimates() if sink or kind == "estimate" else {}
        exact = self._effects if kind == "exact" else {}
        effects = {**estimates, **exact}  # heads the exact sweep did not patch: their estimate
        readout = SinkScore(session.receivers) if kind == "estimate" else session.readout
        clean, _ = session.patcher.clean_value(readout)
        rel = {n: e / clean if clean else 0.0 for n, e in effects.items()}
        limit, _ = effect_limit(rel.values())
        self.effects_scale = float(limit)
        self.effects_label = (
            "sink score (P0-stream estimate)"
            if kind == "estimate"
            else f"{session.readout_name} (exact{'; heads: P0-stream estimate' if sink else ''})"
        )
        self.readout_axis = session.readout.axis or session.readout_name
        rows = []
        for site in self.session.units:
            r = rel.get(site.name)
            rows.append(
                {
                    "name": site.name,
                    "kind": site.kind,
                    "layer": -1 if site.kind == "embed" else site.layer,
                    "head": site.head,
                    "expert": site.expert,
                    "relative": r,
                    "exact": site.name in exact,
                    "color": effect_rgb(r, limit),
                    "circuit": site.name in self.source.circuit,
                }
            )
        self.components = rows
        self.effects_kind = kind

    # -- answering -----------------------------------------------------------------------------

    def _on_question(self, change: dict[str, Any]) -> None:
        self._schedule()

    def _on_rebuild(self, change: dict[str, Any]) -> None:
        if not self._restoring:
            self._schedule(first=True, rebuild=True)

    def _rebuild(self) -> bool:
        """A new session for the controls' counterfactual, receivers and readout (in the worker,
        under the model lock); on bad input the old session stays and the error is shown."""
        try:
            session = self.source.session(
                counterfactual=self.counterfactual,
                receivers=[int(r) for r in self.receivers],
                readout=self.readout,
                head=(int(self.head[0]), int(self.head[1])),
            )
        except UsageError as err:
            self._restoring = True  # the controls show the question still asked
            try:
                self.counterfactual = self.session.patcher.counterfactual.spec
                self.receivers = list(self.session.receivers)
                self.readout = self.session.readout_name
            finally:
                self._restoring = False
            self.error, self.status = str(err), "error: the previous question is kept"
            return False
        self.session, self.error, self._effects, self._partial = session, "", {}, {}
        self._set_components("estimate")  # the map and its legend follow the new question
        return True

    def _schedule(self, first: bool = False, rebuild: bool = False) -> None:
        with self._lock:
            self._generation += 1
            gen = self._generation
        selection = list(self.selected)
        self.busy = True
        worker = threading.Thread(
            target=self._answer, args=(gen, selection, first, rebuild), daemon=True
        )
        self._workers.append(worker)
        worker.start()

    def _current(self, gen: int) -> bool:
        return gen == self._generation

    def _answer(self, gen: int, selection: list[str], first: bool, rebuild: bool) -> None:
        with self._session_lock:
            try:
                if rebuild and not self._rebuild():
                    return
                if self._current(gen) or rebuild:
                    self.error = ""  # the message describes this action, not an older one
                    self.session.check_selection(selection)
                    self._answer_stages(gen, selection, first)
            except UsageError as err:
                if self._current(gen):
                    self.error, self.status = str(err), "error"
            except Exception as err:  # a bug: shown in the panel, never a dead worker
                if self._current(gen):
                    self.error = f"internal error ({type(err).__name__}: {err}); please report it"
                    self.status = "error"
            finally:
                if self._current(gen):
                    self.busy = False

    def _answer_stages(self, gen: int, selection: list[str], first: bool) -> None:
        s = self.session
        if first:
            self.status = "P0-stream estimates of every component (labelled estimate)"
            self._set_components("estimate")
        s.head = (int(self.head[0]), int(self.head[1]))
        path = (self.path_mode, int(self.path_layer)) if self.path_mode else None
        for answer in s.answer_stages(selection, path):  # the session's stages, shown as they come
            self._push(gen, answer.to_dict(), _STAGE_STATUS[answer.stage])
            if not self._current(gen):
                break
        if self._current(gen) and not self._effects:
            self._exact_map(gen)

    def _exact_map(self, gen: int, chunk: int = 8) -> None:
        """Replace the map's estimates by exact single effects, a few components at a time; a
        newer click interrupts it (it resumes after that answer)."""
        s = self.session
        todo = [c.name for c in s.components if c.name not in self._partial]
        while todo and self._current(gen):
            self.status = (
                f"exact single effects of the map: {len(self._partial)}/{len(s.components)}"
            )
            self._partial.update(selection_effects(s, todo[:chunk]))
            todo = todo[chunk:]
        if not todo:
            self._effects, self._partial = dict(self._partial), {}
            self._set_components("exact")
            self.status = "exact"

    def _push(self, gen: int, result: dict[str, Any], status: str) -> None:
        if self._current(gen):
            self.result = result
            self.status = status

    def wait(self, timeout: float = 600.0) -> ExplorePanel:
        """Block until the current answer is complete (tests and scripts)."""
        while self._workers:
            self._workers.pop(0).join(timeout)
        return self

    def close_workers(self) -> None:
        """Cancel the answer in progress (it stops at its next stage) and wait for it."""
        with self._lock:
            self._generation += 1
        self.wait(timeout=None)  # type: ignore[arg-type]

    # -- keeping what you found ----------------------------------------------------------------

    def export(self, out_dir: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path:
        """Write the selection as ``circuit.json`` and ``circuit.graphml`` (with its faithfulness,
        counterfactual and readout as graph attributes) and their ``manifest.json`` into
        ``out_dir`` (default: the panel's ``export_dir``); the folder. An existing folder is
        refused unless ``overwrite``, which replaces only a previous panel export
        (``circuits.panel.export``)."""
        if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
            raise UsageError(
                f"export(out_dir=...) takes a folder path, got {type(out_dir).__name__}"
            )
        if not isinstance(overwrite, bool):
            raise UsageError(f"export(overwrite=...) takes True or False, got {overwrite!r}")
        target = Path(out_dir) if out_dir is not None else self.export_dir
        if not self.selected:
            raise UsageError("nothing is selected: click the components of your circuit first")
        check_export_target(target, overwrite=overwrite)  # before any work
        with self._session_lock:
            effects = self._effects or selection_effects(self.session, list(self.selected))
            graph = self.session.export_graph(list(self.selected), effects)
        return write_export(graph, target, overwrite=overwrite)

    def _on_export(self, change: dict[str, Any]) -> None:
        """The Export button: the next free folder after ``export_dir``, never a replacement."""
        try:
            self.exported = str(self.export(next_free(self.export_dir)))
            self.error = ""
            self.status = f"exported to {self.exported}"
        except UsageError as err:
            self.error = str(err)


@checked
def explore(
    model: str | ZooModel | HookedModel | None = None,
    prompts: str | Int[Tensor, "batch pos"] | Int[Tensor, " pos"] | None = None,
    *,
    discover_dir: str | os.PathLike | None = None,
    counterfactual: str | None = None,
    receivers: NonEmpty[Index] | None = None,
    n_prompts: Count = 4,
    n_tokens: Annotated[int, Field(ge=2)] = 32,
    export_dir: str | os.PathLike | None = None,
    dtype: Literal["float32", "bfloat16", "float16"] | None = None,
    conditions: NonEmpty[Condition] | None = None,
) -> ExplorePanel:
    """The live P0 patching panel for ``model`` (a zoo name, a ``ZooModel`` or any
    HookedTransformer) on ``prompts`` (a text, cut into ``n_prompts`` windows of ``n_tokens``, or
    a token batch ``[batch, pos]``; one prompt ``[pos]``), or on a saved ``discover`` directory
    (its model, prompts, counterfactual, receivers, exact effects and circuit). ``dtype``: the
    precision a model named by ``model`` is loaded in (default float32); a model passed as an
    object runs in its own. ``conditions``: a ``DocumentMask`` / ``Reposition`` held on every
    forward the panel runs (``circuits.patching.positions``; exact answers only, no estimate)."""
    source = panel_source(
        model,
        prompts,
        discover_dir=discover_dir,
        counterfactual=counterfactual,
        receivers=receivers,
        n_prompts=n_prompts,
        n_tokens=n_tokens,
        dtype=dtype,
    )
    source.conditions = tuple(conditions or ())
    return ExplorePanel(source, export_dir=export_dir)


__all__ = ["ExplorePanel", "PatchSession", "explore"]
