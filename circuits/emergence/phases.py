"""The phase detector: absent / wandering / transition / stable, over a run's checkpoints.

The phases are not defined numerically in the paper; ours, ``PhaseCriteria``, are:

* sink strength S(t) = max over layers l >= 2 (all layers when fewer than 3) of ``sink_score``;
  a sink is *present* at checkpoint t when S(t) > ``eps`` (0.3, Gu et al.'s threshold);
* the sink's *location* at t is the pair (``sink_position``, ``jump_layer``);
* **stable**: the longest suffix of checkpoints in which the sink is present, its location
  equals the final checkpoint's, and |S(t) - S(final)| <= ``delta`` (0.1); it must span at least
  ``min_stable`` (2) checkpoints, otherwise there is no stable phase;
* **transition**: the longest run of checkpoints just before the stable phase (or, when there
  is none, ending at the final checkpoint) in which the sink is present and already at its final
  location, while its strength still moves by more than delta;
* **wandering**: every earlier checkpoint from the first one with a sink present: the sink is
  present somewhere else (another key position or another jump layer), or comes and goes;
* **absent**: checkpoints before the first sink. When the final checkpoint has no sink, the
  run never settles: checkpoints with a sink are "wandering", the others "absent".
The labels are monotone in time by construction (absent -> wandering -> transition -> stable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PHASES = ("absent", "wandering", "transition", "stable")


@dataclass(frozen=True)
class PhaseCriteria:
    """The documented thresholds of the phase detector (see the module docstring)."""

    eps: float = 0.3
    delta: float = 0.1
    min_stable: int = 2


def detect_phases(
    strength: list[float],
    location: list[Any],
    criteria: PhaseCriteria = PhaseCriteria(),
) -> list[str]:
    """Label each checkpoint absent / wandering / transition / stable (module docstring).

    ``strength[t]`` is S(t) (max sink score over the downstream layers), ``location[t]`` any
    comparable description of where the sink is (the trace uses (sink_position, jump_layer)).
    """
    n = len(strength)
    if n != len(location):
        raise ValueError("strength and location must have one entry per checkpoint")
    if n == 0:
        return []
    present = [s > criteria.eps for s in strength]
    first = next((i for i, p in enumerate(present) if p), None)
    if first is None:
        return ["absent"] * n
    if not present[-1]:
        return ["absent" if (i < first or not present[i]) else "wandering" for i in range(n)]
    final_loc, final_s = location[-1], strength[-1]

    def settled(i: int) -> bool:
        return present[i] and location[i] == final_loc

    stable_start = n
    while (
        stable_start > 0
        and settled(stable_start - 1)
        and abs(strength[stable_start - 1] - final_s) <= criteria.delta
    ):
        stable_start -= 1
    if n - stable_start < criteria.min_stable:
        stable_start = n
    trans_start = stable_start
    while trans_start > 0 and settled(trans_start - 1):
        trans_start -= 1
    labels = []
    for i in range(n):
        if i >= stable_start:
            labels.append("stable")
        elif i >= trans_start:
            labels.append("transition")
        elif i >= first:
            labels.append("wandering")
        else:
            labels.append("absent")
    return labels
