"""The faithfulness curve of a ranking, and its areas CPR and CMD (MIB, Mueller et al. 2025).

A ranking orders the P0 components (the embedding, every attention layer and MLP before the last
receiver, ``circuits.circuit.faithfulness.all_p0_components``). The circuit of size k keeps the
first k clean and sets every other P0 component to the discovery's counterfactual, all in one
patched run. With m(C) the sink of the receiver layers,

    f(k) = (m(C_k) - m(empty)) / (m(full) - m(empty)),

where m(full) is the clean sink (nothing patched) and m(empty) is the sink with every P0
component at its counterfactual (the faithfulness floor): f(0) = 0 and f(n) = 1 by definition.
On x = k / n (the fraction of components kept), with the trapezoid rule over the sizes measured
(``curve_sizes``, the point (0, 0) included):
* CPR = integral of f(x) dx (higher is better; f can pass 1 where a subset of the components
  keeps more sink than all of them);
* CMD = integral of |1 - f(x)| dx (0 is optimal).

Three rankings are measured, each on the same sizes: the exact effects (|sink change| of each
component patched alone; components outside an ``exact_top_k`` sweep follow by their first-pass
estimate), the first pass's estimates (by |estimate|), and ``curve_random_rankings`` seeded random
orders (the control). A circuit set shared by two rankings is patched once.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from circuits.circuit.faithfulness import all_p0_components
from circuits.circuit.record import FaithfulnessCurve
from circuits.circuit.step_results import CurveFound, StepResult
from circuits.patching.sites import Site

if TYPE_CHECKING:
    from circuits.circuit.steps import DiscoveryState

RANDOM_SEED = 0
DENSE_SIZES = 4
"""Every size from 1 to this is measured; above it the sizes grow by about 1.5x."""


def curve_sizes(n: int) -> list[int]:
    """The circuit sizes a curve is measured at: 1..DENSE_SIZES, then about x1.5 per step, and
    ``n`` (every component: f = 1 by definition, not run)."""
    sizes: list[int] = list(range(1, min(n, DENSE_SIZES) + 1))
    k = DENSE_SIZES
    while True:
        k = max(k + 1, round(k * 1.5))
        if k >= n:
            break
        sizes.append(k)
    if n not in sizes:
        sizes.append(n)
    return sizes


def areas(fractions: Sequence[float], f: Sequence[float]) -> tuple[float, float]:
    """CPR and CMD of a curve given at ``fractions`` (x = k / n, increasing, ending at 1), with
    the point (0, 0) prepended; trapezoid rule."""
    xs, ys = [0.0, *fractions], [0.0, *f]
    cpr = cmd = 0.0
    for i in range(1, len(xs)):
        dx = xs[i] - xs[i - 1]
        cpr += dx * (ys[i] + ys[i - 1]) / 2
        cmd += dx * (abs(1 - ys[i]) + abs(1 - ys[i - 1])) / 2
    return cpr, cmd


def rankings(state: DiscoveryState, everything: list[Site]) -> dict[str, list[Site]]:
    """The orders the curve is measured for: ``exact``, ``first_pass`` and ``random_<i>``."""
    first = state.first_pass_effects

    def by_first(s: Site) -> float:
        return -abs(first.get(s.name, 0.0))

    exact_known = [s for s in everything if s.name in state.relative]
    rest = sorted((s for s in everything if s.name not in state.relative), key=by_first)
    orders = {
        "exact": sorted(exact_known, key=lambda s: -abs(state.relative[s.name])) + rest,
        "first_pass": sorted(everything, key=by_first),
    }
    rng = random.Random(RANDOM_SEED)
    for i in range(state.config.curve_random_rankings):
        orders[f"random_{i}"] = rng.sample(everything, len(everything))
    return orders


def faithfulness_curve(state: DiscoveryState) -> StepResult:
    """f(k), CPR and CMD of every ranking (module docstring), as the record's
    ``faithfulness_curve``; needs the faithfulness step's floor run."""
    if state.faith is None or not state.config.curve:
        return CurveFound(faithfulness_curve=None)
    everything = all_p0_components(state.cfg, state.sweep_layers)
    n = len(everything)
    sizes = curve_sizes(n)
    fractions = [k / n for k in sizes]
    orders = rankings(state, everything)
    floor_value = float(state.faith.runs.values[2])
    span = state.clean - floor_value
    patches: dict[frozenset[str], list[Site]] = {}
    for order in orders.values():
        for k in sizes[:-1]:  # size n: nothing patched, f = 1
            kept = {s.name for s in order[:k]}
            patches.setdefault(frozenset(kept), [s for s in everything if s.name not in kept])
    keys = list(patches)
    res = state.patcher.patch(
        [patches[key] for key in keys], state.metric, desc="faithfulness curve"
    )
    value = dict(zip(keys, res.values.tolist(), strict=True))
    curves: dict[str, dict[str, Any]] = {}
    for name, order in orders.items():
        values = [value[frozenset(s.name for s in order[:k])] for k in sizes[:-1]] + [state.clean]
        f = [(v - floor_value) / span if span else 0.0 for v in values]
        cpr, cmd = areas(fractions, f)
        curves[name] = {
            "order": [s.name for s in order],
            "values": values,
            "f": f,
            "cpr": cpr,
            "cmd": cmd,
        }
    randoms = [c for name, c in curves.items() if name.startswith("random_")]
    summary = {name: {"cpr": c["cpr"], "cmd": c["cmd"]} for name, c in curves.items()}
    if randoms:
        summary["random_mean"] = {
            "cpr": statistics.fmean(c["cpr"] for c in randoms),
            "cmd": statistics.fmean(c["cmd"] for c in randoms),
        }
    found = {
        "n_components": n,
        "sizes": sizes,
        "fractions": fractions,
        "circuit_size": len(state.nodes),
        "clean": state.clean,
        "empty": floor_value,
        "rankings": curves,
        "summary": summary,
        "patched_runs": len(keys),
        "definition": "f(k) = (m(C_k) - m(empty)) / (m(full) - m(empty)): m is the readout "
        "(default: the receivers' sink), C_k keeps a ranking's first k P0 components clean with every other P0 component "
        "at the counterfactual, m(full) the clean readout, m(empty) every P0 component at the "
        "counterfactual; CPR = area under f over x = k / n, CMD = area of |1 - f|, trapezoid "
        "rule over the sizes with (0, 0) included (MIB, Mueller et al. 2025). Rankings: exact "
        "(|exact effect|), first_pass (|first-pass estimate|), random_i (seeded random orders)",
    }
    state.say(
        "faithfulness curve: "
        + ", ".join(f"{k} CPR {v['cpr']:.3f} CMD {v['cmd']:.3f}" for k, v in summary.items())
    )
    return CurveFound(faithfulness_curve=FaithfulnessCurve.model_validate(found))
