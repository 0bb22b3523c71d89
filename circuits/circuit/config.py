"""``DiscoverConfig``: the knobs of the discovery pipeline, checked before any model runs
(pure Python: the CLI shows these defaults without importing torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any

from pydantic import Field

from circuits.core.arguments import Count, Index, NonEmpty, check_fields
from circuits.core.conventions import (
    check_counterfactual,
    default_receiver_layers,
    parse_readout_spec,
)
from circuits.core.errors import UsageError

FIRST_PASSES = ("p0-stream", "attribution")
"""The first-pass estimates ``discover`` can rank and cross-check with (``DiscoverConfig.first_pass``)."""


Threshold = Annotated[float, Field(ge=0, lt=1)]
"""|effect| / clean value: in [0, 1)."""
Share = Annotated[float, Field(gt=0, le=1)]
"""A share that must be positive: in (0, 1]."""
NonNegative = Annotated[int, Field(ge=0)]


@dataclass
class DiscoverConfig:
    """Knobs of the pipeline (defaults are what ``p0-circuits discover`` uses)."""

    counterfactual: str = "shift"
    readout: str = "sink"
    """What the circuit is for (``circuits.core.conventions.DISCOVER_READOUTS``): ``sink`` (the
    receivers' sink score, the paper's question), ``loss``, ``kl`` or ``logit-diff:A,B``.
    Effects are normalised by the readout's span (``circuits.circuit.readout_choice``)."""
    receivers: NonEmpty[Index] | None = None
    """Receiver layers of the sink metric (default: ``first_receiver`` .. last layer)."""
    first_receiver: Index | None = None
    """None: layer 2 (Gu et al.'s Sink_0[2:]), or the last layer of a model with fewer than 3."""
    component_threshold: Threshold = 0.05
    """|effect| / clean sink needed to select a component (or a head)."""
    head_threshold: Threshold = 0.05
    head_cover: Share = 0.8
    edge_threshold: Threshold = 0.02
    """|effect| / clean sink (of the path's metric) needed to draw an edge."""
    sufficiency: Share = 0.8
    """kept fraction at which the backup search stops."""
    max_backups: NonNegative = 3
    backup_min_gain: Threshold = 0.05
    exact_top_k: NonNegative | None = None
    """None (default): exact patching of every component. k: exact patching for the embedding,
    the blocks up to ``first_receiver`` and the k other components the first-pass estimate ranks
    highest. Exact is the default because patching all 59 of SmolLM2's components costs 16 s at
    8 x 64 on 2 CPU cores; ``exact_top_k`` is for models too large to patch whole."""
    first_pass: str = "p0-stream"
    """The estimate that ranks components for ``exact_top_k`` and is reported against the exact
    effects: ``"p0-stream"`` (``circuits.patching.stream``: exact on P0's keys with the other
    positions clean; Pearson r 0.97 with exact patching on SmolLM2, 0.986 on Gemma 3) or
    ``"attribution"`` (attribution patching, ``circuits.patching.attribution``; r -0.03 on
    SmolLM2, ``benchmarks/bench_attribution.py``)."""
    ig_steps: Count = 1
    """For ``first_pass="attribution"``: 1, the gradient at the clean run; k > 1, integrated
    gradients along the clean -> counterfactual path in k steps."""
    shift_token: Index | None = None
    prediction_random_sets: NonNegative = 8
    """Random component sets the prediction step compares the circuit with (0: skip the step,
    ``circuits.circuit.prediction``)."""
    curve: bool = True
    """Measure the faithfulness curve of every ranking (CPR / CMD, ``circuits.circuit.curve``):
    about one patched run per size per ranking."""
    curve_random_rankings: NonNegative = 2
    """Seeded random rankings the curve measures as the control."""
    max_rows: Count = 64
    progress: bool = True

    def __post_init__(self) -> None:
        try:  # ranges first, in the words the CLI's flags use
            self.check()
        except TypeError:
            pass  # a value of the wrong type: check_fields names it
        check_fields(self)  # types, NaN: before any work

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["receivers"] = None if self.receivers is None else list(self.receivers)
        return d

    def check(self) -> None:
        """A one-line ``UsageError`` for the first value out of range."""
        check_counterfactual(self.counterfactual)
        parse_readout_spec(self.readout)
        for name in ("component_threshold", "head_threshold", "edge_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise UsageError(f"{name} must lie in [0, 1), got {v}")
        if not 0.0 < self.head_cover <= 1.0:
            raise UsageError(f"head_cover must lie in (0, 1], got {self.head_cover}")
        if not 0.0 < self.sufficiency <= 1.0:
            raise UsageError(f"sufficiency must lie in (0, 1], got {self.sufficiency}")
        if self.max_backups < 0:
            raise UsageError("max_backups must be >= 0")
        if self.prediction_random_sets < 0:
            raise UsageError("prediction_random_sets must be >= 0 (0: skip the prediction step)")
        if self.curve_random_rankings < 0:
            raise UsageError("curve_random_rankings must be >= 0")
        if self.exact_top_k is not None and self.exact_top_k < 0:
            raise UsageError("exact_top_k must be >= 0")
        if (
            isinstance(self.ig_steps, bool)
            or not isinstance(self.ig_steps, int)
            or self.ig_steps < 1
        ):
            raise UsageError(f"ig_steps must be an integer >= 1, got {self.ig_steps!r}")
        if self.first_pass not in FIRST_PASSES:
            raise UsageError(
                f"first_pass must be one of {', '.join(FIRST_PASSES)}, got {self.first_pass!r}"
            )
        if self.ig_steps != 1 and self.first_pass != "attribution":
            raise UsageError(
                f"ig_steps={self.ig_steps} applies to the attribution first pass: "
                "set first_pass='attribution' (CLI: --first-pass attribution) or leave ig_steps at 1"
            )

    def first_receiver_layer(self, n_layers: int) -> int:
        """``first_receiver``, or its default on a model with ``n_layers`` layers."""
        if self.first_receiver is None:
            return default_receiver_layers(n_layers)[0]
        return self.first_receiver

    def receiver_layers(self, n_layers: int) -> list[int]:
        """The sink metric's receiver layers on a model with ``n_layers`` layers."""
        n = n_layers
        if self.receivers is not None:
            layers = sorted({int(r) for r in self.receivers})
        else:
            first = self.first_receiver_layer(n)
            if not 1 <= first < n:
                raise UsageError(
                    f"first_receiver {first} out of range: the model has layers "
                    f"0..{n - 1} and the first receiver must be one of 1..{n - 1}"
                )
            layers = list(range(first, n))
        bad = [r for r in layers if not 0 <= r < n]
        if bad or not layers:
            raise UsageError(
                f"receiver layers {bad or layers} out of range: the model has layers 0..{n - 1}"
            )
        if max(layers) == 0:
            raise UsageError(
                "receiver layers must include a layer >= 1 (layer 0 cannot be moved by P0 components)"
            )
        return layers
