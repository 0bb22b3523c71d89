"""When a curve over training has settled: the settling step of control engineering, one
definition for the loss and for the P0 sink signal (``circuits.emergence.monitor``), so the two
can be set side by side."""

from __future__ import annotations


def settling_step(steps: list[int], values: list[float], band: float = 0.1) -> int | None:
    """Looking back on a finished run: the first step from which ``values`` stay within
    ``band`` x |last - first| of the last value (the settling time of control engineering); the
    same definition for the loss and for the P0 signal, so the two can be set side by side.
    None for fewer than two values or no change at all."""
    if len(values) < 2 or values[-1] == values[0]:
        return None
    width = band * abs(values[-1] - values[0])
    settled = None
    for step, value in zip(steps, values, strict=True):
        if abs(value - values[-1]) > width:
            settled = None
        elif settled is None:
            settled = step
    return settled
