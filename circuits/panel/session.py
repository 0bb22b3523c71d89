"""What the live patching panel computes: one ``Patcher`` and the questions a click asks of it.

``PatchSession`` holds a model, its prompts, a counterfactual and a readout, and answers, for a
*selection* of P0 components (the set being patched):

* the readout per receiver layer, clean and with the selection patched jointly (exact);
* the selection's faithfulness as a candidate circuit: ``kept`` = the readout with every other
  P0 component patched and only the selection clean, ``ablated`` = with the selection patched,
  both over the clean value (``circuits.circuit.faithfulness``'s definitions);
* the attention pattern of one receiver head before and after (prompt 0), exact;
* in path mode, the selected senders' paths into one receiver input (``q`` / ``k`` / ``v`` /
  ``mlp_in`` of a layer), each alone.

Before any exact number the session can give an *estimate*, labelled as one: the sum of the
selected components' single P0-stream estimates (``circuits.patching.stream``), computed once for
every component when the session opens (no forward at click time). Every other number is an
exact patch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from circuits.backend import HookedModel, get_act_name
from circuits.backend.experts import experts_unavailable
from circuits.circuit.config import DiscoverConfig
from circuits.circuit.faithfulness import all_p0_components, others_of
from circuits.circuit.graph import CircuitGraph
from circuits.core.arguments import Index, checked
from circuits.core.conventions import RECEIVER_KINDS
from circuits.core.errors import UsageError
from circuits.patching.allocator import keep_freed_memory
from circuits.patching.counterfactuals import Counterfactual
from circuits.patching.key_value_readouts import P0ValueNorm, SinkKeyDirection, SinkKeyNorm
from circuits.patching.output_readouts import NextTokenLoss
from circuits.patching.patcher import Patcher, engine_of
from circuits.patching.positions import Condition
from circuits.patching.readouts import AttentionToP0, Readout, SinkScore
from circuits.patching.sites import Receiver, Site, head_sites
from circuits.patching.stream import EstimateUnavailable, p0_stream_estimate

PANEL_READOUTS: tuple[type[Readout], ...] = (
    SinkScore,
    AttentionToP0,
    NextTokenLoss,
    SinkKeyDirection,
    SinkKeyNorm,
    P0ValueNorm,
)
"""The readouts the panel offers, each named by its class's ``label`` (the front end's menu is
sent this list; a pattern readout is read on the receiver layers)."""
READOUTS = tuple(r.label for r in PANEL_READOUTS)
PATH_KINDS = RECEIVER_KINDS
PATH_LABELS = {"k": "paths → K", "q": "paths → Q", "v": "paths → V", "mlp_in": "paths → MLP input"}


class HeadPattern(Readout):
    """One head's attention pattern on prompt ``prompt`` (the detail, ``[query, key]``); its
    value is that head's attention to P0 (mean over queries q >= 1)."""

    name = "head_pattern"

    @checked
    def __init__(self, layer: Index, head: Index, prompt: Index = 0) -> None:
        self.layer, self.head, self.prompt = int(layer), int(head), int(prompt)

    def check(self, model: HookedModel, tokens: Tensor) -> None:
        if not 0 <= self.layer < model.cfg.n_layers or not 0 <= self.head < model.cfg.n_heads:
            raise UsageError(
                f"head {self.layer}.{self.head} does not exist: layers 0..{model.cfg.n_layers - 1}, "
                f"heads 0..{model.cfg.n_heads - 1}"
            )

    def reads(self, model: HookedModel) -> tuple[str, ...]:
        return (get_act_name("pattern", self.layer),)

    def reduce(self, name: str, acts: Tensor) -> Tensor:
        return acts[:, self.prompt, self.head].float().clone()  # [n, query, key]

    def combine(self, reduced: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        pattern = reduced[get_act_name("pattern", self.layer)]
        return pattern[:, 1:, 0].mean(dim=-1), pattern

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": f"attention pattern of head {self.layer}.{self.head} on prompt "
            f"{self.prompt}; value: its mean attention of queries q>=1 to P0",
        }


@dataclass
class PanelAnswer:
    """The panel's answer for one selection (every number exact unless ``estimate``)."""

    selection: list[str]
    layers: list[int]
    clean: list[float]
    patched: list[float] | None = None
    estimate: float | None = None
    kept: float | None = None
    ablated: float | None = None
    pattern_clean: list[list[float]] | None = None
    pattern_patched: list[list[float]] | None = None
    paths: dict[str, float] | None = None
    stage: str = "clean"

    def to_dict(self) -> dict[str, Any]:
        """The widget's ``result`` (what panel.js draws); unset parts left out."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class PatchSession:
    """A model, prompts, a counterfactual and a readout, and the panel's questions of them."""

    def __init__(
        self,
        model: HookedModel,
        tokens: Tensor,
        *,
        counterfactual: str | Counterfactual = "shift",
        receivers: Sequence[int] | None = None,
        readout: str = "sink score",
        head: tuple[int, int] | None = None,
        max_rows: int = 64,
        conditions: Sequence[Condition] = (),
    ) -> None:
        self.model = model
        keep_freed_memory()  # the panel patches again and again: reuse the buffers
        self.patcher = Patcher(
            model, tokens, counterfactual, max_rows=max_rows, conditions=tuple(conditions) or None
        )
        n = model.cfg.n_layers
        self.receivers = list(DiscoverConfig(receivers=receivers).receiver_layers(n))
        self.set_readout(readout)
        self.components = all_p0_components(model.cfg, range(max(self.receivers)))
        self.heads = head_sites(range(max(self.receivers)), model.cfg.n_heads, positions=(0,))
        self.experts = (  # an MoE model's experts, shown like heads
            [
                Site("expert", la, expert=e)
                for la in range(max(self.receivers))
                for e in range(int(model.cfg.num_experts))
            ]
            if experts_unavailable(model) is None
            else []
        )
        self.head = head if head is not None else self.sink_head()
        self._estimates: dict[str, float] | None = None
        self._clean_pattern: list[list[float]] | None = None

    def sink_head(self) -> tuple[int, int]:
        """The receiver head that attends to P0 most on the clean prompts (mean over queries
        q >= 1 and prompts): the head the panel draws first."""
        best: tuple[float, int, int] = (-1.0, self.receivers[0], 0)

        def keep(pattern: Tensor, hook) -> None:
            nonlocal best
            per_head = pattern[:, :, 1:, 0].float().mean(dim=(0, 2))
            h = int(per_head.argmax())
            best = max(best, (float(per_head[h]), int(hook.name.split(".")[1]), h))

        names = [get_act_name("pattern", la) for la in self.receivers]
        with engine_of(self.patcher).conditioned(), torch.inference_mode():
            self.model.run_with_hooks(
                self.patcher.tokens,
                return_type=None,
                fwd_hooks=[(n, keep) for n in names],
            )
        return best[1], best[2]

    @property
    def units(self) -> list[Site]:
        """Every site the panel can patch: P0 components, heads, experts."""
        return [*self.components, *self.heads, *self.experts]

    # -- the question ------------------------------------------------------------------------

    def set_readout(self, readout: str) -> None:
        if readout not in READOUTS:
            raise UsageError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")
        self.readout_name = readout
        self.readout: Readout = self._readout_on(self.receivers)

    def _readout_on(self, layers: Sequence[int]) -> Readout:
        cls = PANEL_READOUTS[READOUTS.index(self.readout_name)]
        return cls(layers) if cls.takes_receivers else cls()  # type: ignore[call-arg]

    @property
    def per_layer(self) -> bool:
        return self.readout.layer_columns() is not None

    def site(self, name: str) -> Site:
        for s in self.units:
            if s.name == name:
                return s
        known = [s.name for s in self.components[:3]]
        raise UsageError(
            f"unknown component {name!r}: the panel patches P0 components and heads of layers "
            f"0..{max(self.receivers) - 1} (e.g. {', '.join(known)}, attn0.h0@p0)"
        )

    def check_selection(self, selection: Sequence[str]) -> None:
        """A ``UsageError`` naming the first entry of ``selection`` that is not a component
        name of this session (before any work)."""
        for name in selection:
            if not isinstance(name, str):
                raise UsageError(
                    f"selected entries are component names (str), got {type(name).__name__}"
                )
            self.site(name)

    # -- estimates -----------------------------------------------------------------------------

    def single_estimates(self) -> dict[str, float]:
        """P0-stream estimate of every component's and head's single effect on the sink score
        (once per session; the estimate is for the sink score only). Exact single effects where
        the model does not expose what the estimate reads (``EstimateUnavailable``)."""
        if self._estimates is None:
            sites = self.units
            metric = SinkScore(self.receivers)
            try:
                res = p0_stream_estimate(self.patcher, sites, metric)
            except EstimateUnavailable:
                res = self.patcher.patch(sites, metric, desc="single effects (exact)")
            self._estimates = res.as_dict()
        return self._estimates

    def estimate(self, selection: Sequence[str]) -> float | None:
        """Clean sink plus the sum of the selection's single P0-stream estimates (labelled an
        estimate: single effects need not add up); None for other readouts."""
        if self.readout_name != "sink score" or not selection:
            return None
        est = self.single_estimates()
        clean, _ = self.patcher.clean_value(SinkScore(self.receivers))
        return clean + sum(est[n] for n in selection)

    # -- exact answers -------------------------------------------------------------------------

    def clean_curve(self) -> tuple[float, list[float]]:
        clean, detail = self.patcher.clean_value(self.readout)
        return clean, ([clean] if detail is None else [float(x) for x in detail])

    def curve(self, selection: Sequence[str]) -> list[float]:
        """The readout per receiver layer (or its one value) with the selection patched."""
        sites = tuple(self.site(n) for n in selection)
        res = self.patcher.patch([sites], self.readout, desc="")
        return [float(res.values[0])] if res.detail is None else res.detail[0].tolist()

    def faithfulness(self, selection: Sequence[str]) -> tuple[float, float]:
        """(kept, ablated) of the selection as a circuit, over the clean value."""
        chosen = [self.site(n) for n in selection]
        # as discover counts them: a kept head's (expert's) layer ablates its other heads (experts)
        rest = tuple(others_of(chosen, self.components, self.model.cfg))
        patches = [rest if rest else (), tuple(chosen)]
        clean, _ = self.patcher.clean_value(self.readout)
        res = self.patcher.patch([p for p in patches if p], self.readout, desc="")
        values = res.values.tolist()
        kept = values[0] / clean if rest else 1.0
        ablated = values[-1] / clean
        return kept, ablated

    def patterns(self, selection: Sequence[str]) -> tuple[list[list[float]], list[list[float]]]:
        """The chosen receiver head's pattern (prompt 0) clean and with the selection patched."""
        readout = HeadPattern(*self.head)
        if self._clean_pattern is None:
            _, pattern = self.patcher.clean_value(readout)
            assert pattern is not None
            self._clean_pattern = pattern.tolist()
        sites = tuple(self.site(n) for n in selection)
        last = max(s.order[0] for s in sites)
        if last >= self.head[0]:
            return self._clean_pattern, self._clean_pattern
        res = self.patcher.patch([sites], readout, desc="")
        assert res.detail is not None
        return self._clean_pattern, res.detail[0].tolist()

    def paths(self, selection: Sequence[str], kind: str, layer: int) -> dict[str, float]:
        """Each selected sender's path into ``kind`` of ``layer``: its effect on the readout."""
        if kind not in PATH_KINDS:
            raise UsageError(f"path mode must be one of {', '.join(PATH_KINDS)}, got {kind!r}")
        receiver = Receiver(kind, layer)
        pairs = [(self.site(n), receiver) for n in selection if self.site(n).order < receiver.order]
        if not pairs:
            return {}
        metric = self.readout
        if self.per_layer:  # the receiver layers the path can reach
            later = [r for r in self.receivers if r > layer or (kind in ("q", "k") and r == layer)]
            if not later:
                return {}
            metric = self._readout_on(later)
        res = self.patcher.path_patch(pairs, metric, desc="")
        return res.as_dict()

    def answer_stages(
        self, selection: Sequence[str], path: tuple[str, int] | None = None
    ) -> Iterator[PanelAnswer]:
        """What the panel shows for a selection, in the order it can show it: the clean curve
        and the P0-stream estimate (``stage`` "estimate", or "clean" for no selection), the exact
        patched curve ("exact curve"), then faithfulness, the head's pattern and the paths of
        ``path`` = (kind, layer) ("exact"). The widget shows each as it comes; a caller that
        stops iterating computes no more."""
        _, clean = self.clean_curve()
        out = PanelAnswer(list(selection), self.layers(), clean, estimate=self.estimate(selection))
        out.stage = "estimate" if selection else "clean"
        yield out
        if not selection:
            return
        out = replace(out, patched=self.curve(selection), stage="exact curve")
        yield out
        kept, ablated = self.faithfulness(selection)
        before, after = self.patterns(selection)
        paths = self.paths(selection, *path) if path else None
        yield replace(
            out,
            kept=kept,
            ablated=ablated,
            pattern_clean=before,
            pattern_patched=after,
            paths=paths,
            stage="exact",
        )

    def answer(self, selection: Sequence[str], path: tuple[str, int] | None = None) -> PanelAnswer:
        """Everything the panel shows for a selection, exact (its last stage)."""
        *_, last = self.answer_stages(selection, path)
        return last

    def layers(self) -> list[int]:
        return list(self.receivers) if self.per_layer else [-1]

    # -- keeping what you found ----------------------------------------------------------------

    def export_graph(self, selection: Sequence[str], effects: dict[str, float]) -> CircuitGraph:
        """The selection as a ``CircuitGraph`` with its faithfulness and the question asked."""
        kept, ablated = self.faithfulness(selection) if selection else (None, None)
        clean, _ = self.patcher.clean_value(self.readout)
        floor = self.patcher.patch([tuple(self.components)], self.readout, desc="")
        g = CircuitGraph(
            model=str(self.model.cfg.model_name),
            counterfactual=self.patcher.counterfactual.spec,
            counterfactual_definition=self.patcher.counterfactual.definition,
            metric=self.readout.name,
            metric_definition=self.readout.describe()["definition"],
            receiver_layers=list(self.receivers),
            position=0,
            n_prompts=self.patcher.batch,
            n_tokens=self.patcher.n_pos,
            clean_sink=clean if self.readout_name == "sink score" else None,
            circuit=", ".join(selection),
            faithfulness_kept=kept,
            faithfulness_ablated=ablated,
            faithfulness_floor=float(floor.values[0]) / clean,
            verdict="selected by hand in the p0-circuits patching panel",
        )
        for name in selection:
            site = self.site(name)
            effect = effects.get(name)
            g.add_node(
                name,
                **CircuitGraph.from_site(site),
                effect=effect,
                relative=None if effect is None else effect / clean,
                role="core",
            )
        return g


def selection_effects(session: PatchSession, names: Sequence[str]) -> dict[str, float]:
    """Exact single effects of ``names`` on the session's readout (one batched sweep)."""
    if not names:
        return {}
    res = session.patcher.patch([session.site(n) for n in names], session.readout, desc="")
    return {n: float(e) for n, e in zip(res.names, res.effects.tolist(), strict=True)}
