"""The question ``discover`` asks of P0's components, and the span its effects are measured in.

``DiscoverConfig.readout`` names it (``circuits.core.conventions.DISCOVER_READOUTS``): the
receivers' sink score (the paper's question, the default), the next-token loss, the KL of the
next-token distribution to the clean one, or a logit difference. Every effect ``discover``
reports is ``(value - clean) / span`` and every kept / ablated / floor ``(value - reference) /
span``, with ``span = clean - reference``:

* ``sink``: reference 0, no attention to P0. Effects are fractions of the clean sink, the
  numbers the paper quotes (-1: the patch removes the sink).
* ``loss``, ``kl``, ``logit-diff``: the reference is the floor, the readout with every P0
  component at its counterfactual (Wang et al.'s F(empty)). Such a readout has no natural zero
  (a loss of 0 is not "no effect"), so -1 is a patch that moves it as far as patching all of
  P0 does, and a large relative change of a readout P0 barely moves is refused rather than
  magnified (``span`` near 0: nothing to explain).

Negative is always "towards the reference" (blue in every figure: the patch lowers the sink, or
moves the loss towards its floor).
"""

from __future__ import annotations

from dataclasses import dataclass

from circuits.backend import HookedModel
from circuits.core.conventions import parse_readout_spec
from circuits.core.errors import UsageError
from circuits.patching.output_readouts import KLToClean, LogitDifference, NextTokenLoss
from circuits.patching.readouts import Readout, SinkScore

MIN_SPAN = 1e-6
"""|clean - reference| below this: P0's components do not move the readout; nothing to explain."""


@dataclass(frozen=True)
class Span:
    """The clean readout and its reference; ``relative`` and ``fraction`` put numbers on the
    scale the verdict, the figures and the thresholds share."""

    clean: float
    reference: float
    reference_is: str
    """``"zero"`` (the sink) or ``"floor"`` (every P0 component at its counterfactual)."""

    @property
    def width(self) -> float:
        return self.clean - self.reference

    def relative(self, effect: float) -> float:
        """An effect (value - clean) as a share of the span (-1: as far as the reference)."""
        return effect / self.width

    def fraction(self, value: float) -> float:
        """A patched value as (value - reference) / span (1: clean, 0: the reference)."""
        return (value - self.reference) / self.width


def reference_of(spec: str) -> str:
    """``"zero"`` for the sink readout, ``"floor"`` for the others (module docstring)."""
    return "zero" if parse_readout_spec(spec)[0] == "sink" else "floor"


def token_id(model: HookedModel, token: str) -> int:
    """A token named by its id (``"1234"``) or as text that is exactly one token."""
    if token.lstrip("-").isdigit():
        return int(token)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise UsageError(
            f"logit-diff token {token!r}: this model has no tokenizer; give token ids instead"
        )
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise UsageError(
            f"logit-diff token {token!r} is {len(ids)} tokens ({ids}); give one token or its id"
        )
    return int(ids[0])


def discover_readout(spec: str, model: HookedModel, sink: SinkScore) -> Readout:
    """The readout a ``discover --readout`` spec asks for, on ``model``: ``sink`` itself (the
    receivers' sink score the discovery records anyway) for ``"sink"``."""
    kind, tokens = parse_readout_spec(spec)
    if kind == "sink":
        return sink
    if kind == "loss":
        return NextTokenLoss()
    if kind == "kl":
        return KLToClean()
    assert tokens is not None
    return LogitDifference(token_id(model, tokens[0]), token_id(model, tokens[1]))


def span_of(spec: str, clean: float, floor: float | None) -> Span:
    """The span of ``spec``'s readout from its clean value (and the floor run where the
    reference is the floor); a ``UsageError`` when P0's components do not move it."""
    reference_is = reference_of(spec)
    reference = 0.0 if reference_is == "zero" else floor
    assert reference is not None
    if reference_is == "zero" and clean <= 0:
        raise UsageError("the clean sink score is zero: nothing to explain")
    if abs(clean - reference) < MIN_SPAN:
        raise UsageError(
            f"readout {spec!r} is {clean:.6g} clean and {reference:.6g} with every P0 component "
            "at its counterfactual: P0's components do not move it, nothing to explain; try "
            "another --counterfactual or --readout"
        )
    return Span(clean, reference, reference_is)
