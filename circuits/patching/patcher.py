"""``Patcher``: what a researcher calls to patch a model at position zero.

Its surface is the experiments (``patch``, ``path_patch``, ``clean_value``,
``clean_sink_per_layer``) and the data they run on (``model``, ``tokens``, ``counterfactual``,
the ``conditions`` held on every forward, the cached ``clean`` and counterfactual ``cf`` activations, ``batch``, ``n_pos``). The stacked,
truncated forwards behind it are ``circuits.patching.engine.Engine``, the package's own: the
patching modules (paths, the stream estimate, nested patches, attribution) reach it through
``engine_of``, never through a private member.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxtyping import Int
from torch import Tensor

from circuits.backend import HookedModel
from circuits.core.arguments import Count, Index, NonEmpty, checked
from circuits.patching.counterfactuals import Counterfactual
from circuits.patching.engine import Engine
from circuits.patching.forward import PatchEngine
from circuits.patching.positions import Condition
from circuits.patching.readouts import Readout, SinkScore
from circuits.patching.results import PatchingResult
from circuits.patching.sites import Patch, Receiver, Site


class Patcher:
    """Clean and counterfactual activations of ``model`` on ``tokens``, and patched runs on them.

    ``tokens``: ``[batch, pos]`` prompts of equal length, no padding (position 0 is each row's
    real first token). ``counterfactual``: a spec (``shift``, ``shift:ID``, ``mean``, ``zero``,
    ``token:<bos>``, ``token:ID``) or a ``Counterfactual`` (e.g. ``PromptSet(corrupted)``).
    ``max_rows``: the largest stacked batch one forward may use (``n_patches_per_forward *
    batch``). ``prefix_blocks``: run the patched block on the prefix alone where that is exact
    (``circuits.patching.prefix``; False, or without ``RESUMES_FROM_RESIDUAL``: whole blocks).
    ``conditions``: ``DocumentMask`` / ``Reposition`` (``circuits.patching.positions``) held on
    every forward this patcher runs, clean, counterfactual and patched (TransformerLens 3).
    Building one runs the clean forward and computes the counterfactual values (every patchable
    site, ``circuits.patching.engine.cached_hooks``); it changes no process-wide setting.
    """

    @checked
    def __init__(
        self,
        model: HookedModel,
        tokens: Int[Tensor, "batch pos"],
        counterfactual: str | Counterfactual = "shift",
        *,
        shift_token: Index | None = None,
        max_rows: Count = 64,
        progress: bool = False,
        prefix_blocks: bool = True,
        conditions: NonEmpty[Condition] | None = None,
    ) -> None:
        self._engine = Engine(
            model,
            tokens,
            counterfactual,
            shift_token=shift_token,
            max_rows=max_rows,
            progress=progress,
            prefix_blocks=prefix_blocks,
            conditions=tuple(conditions or ()),
        )

    # -- what the experiments run on -----------------------------------------------------------

    @property
    def model(self) -> HookedModel:
        return self._engine.model

    @property
    def tokens(self) -> Int[Tensor, "batch pos"]:
        """The prompts, on the model's device."""
        return self._engine.tokens

    @property
    def counterfactual(self) -> Counterfactual:
        """What replaces a patched site's clean value (its ``spec`` and ``definition``)."""
        return self._engine.counterfactual

    @property
    def clean(self) -> dict[str, Tensor]:
        """Clean activations of every patchable hook, ``[batch, pos, ...]``."""
        return self._engine.clean

    @property
    def cf(self) -> dict[str, Tensor]:
        """Counterfactual activations of every patchable hook (what a patch writes)."""
        return self._engine.cf

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The conditions held on every forward (empty: the model as it is)."""
        return self._engine.conditions

    @property
    def batch(self) -> int:
        """Number of prompts."""
        return self._engine.batch

    @property
    def n_pos(self) -> int:
        """Tokens per prompt."""
        return self._engine.n_pos

    # -- experiments ---------------------------------------------------------------------------

    @checked
    def patch(
        self,
        patches: NonEmpty[Patch],
        readout: Readout | Callable | None = None,
        *,
        desc: str = "activation patching",
    ) -> PatchingResult:
        """Exact activation patching: one readout value per patch.

        Each item of ``patches`` is one patch: a Site, or a tuple of Sites applied together in
        the same run (``[a, b]`` patches a and b separately; ``[(a, b)]`` patches them jointly).
        Each replaces its sites' clean values by the counterfactual ones. All input is checked
        before any forward runs.
        """
        return self._engine.patch(patches, readout, desc=desc)

    @checked
    def path_patch(
        self,
        paths: NonEmpty[tuple[Site, Receiver]],
        readout: Readout | Callable | None = None,
        *,
        desc: str = "path patching",
    ) -> PatchingResult:
        """IOI-style path patching: one readout value per (sender, receiver) path (see
        ``circuits.patching.paths.path_patch``)."""
        from circuits.patching.paths import path_patch

        with self._engine.conditioned():
            return path_patch(self._engine, paths, readout, desc=desc)

    @checked
    def clean_value(self, readout: Readout | Callable) -> tuple[float, Tensor | None]:
        """The readout on the unpatched run (from the clean reductions of its reads), and its
        per-layer detail where it has one."""
        return self._engine.clean_value(readout)

    def clean_sink_per_layer(self) -> list[float]:
        """Clean sink score (mean over heads and prompts) of every layer."""
        _, detail = self._engine.clean_value(SinkScore(range(self.model.cfg.n_layers)))
        assert detail is not None
        return [float(x) for x in detail]


def engine_of(patcher: Patcher | PatchEngine) -> PatchEngine:
    """The engine behind ``patcher``: the interface the patching modules use (not for users)."""
    return patcher._engine if isinstance(patcher, Patcher) else patcher
