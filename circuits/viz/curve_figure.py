"""The faithfulness curve (``circuits.circuit.curve``), drawn.

f(k) against k, the number of P0 components kept clean (log scale: circuits are small, so the
curve's shape is at its left), one line per ranking: the exact effects, the first pass, and the
random orders (thin grey; their mean dashed). CPR / CMD of each ranking are in the legend, below
the axes (it covers no curve); the star is the discovered circuit itself (its own f, from its kept
sink: it need not lie on a ranking's curve, since its members are not the top-k of any ranking).
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from circuits.circuit.record import DiscoveryRecord
from circuits.core.errors import MissingDataError
from circuits.viz.style import LOWERS, new_figure

FIRST_PASS_COLOR = "#e08214"
RANDOM_GREY = "#9e9e9e"


def faithfulness_curve_figure(record: DiscoveryRecord | dict[str, Any]) -> Figure:
    """f(k) of every ranking against the number of components kept, with CPR / CMD."""
    record = DiscoveryRecord.of(record)
    curve = record.faithfulness_curve
    if curve is None:
        raise MissingDataError("patching.json has no faithfulness curve (faithfulness_curve)")
    sizes, ranks = curve.sizes, curve.rankings
    fig = new_figure(6.4, 4.6)
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    randoms = [name for name in ranks if name.startswith("random_")]
    for i, name in enumerate(randoms):
        ax.plot(
            sizes,
            ranks[name].f,
            color=RANDOM_GREY,
            lw=0.8,
            alpha=0.7,
            label="random orders" if i == 0 else None,
        )
    if randoms:
        mean = [sum(ranks[n].f[j] for n in randoms) / len(randoms) for j in range(len(sizes))]
        rm = curve.summary["random_mean"]
        ax.plot(
            sizes,
            mean,
            color="black",
            lw=1.2,
            ls="--",
            label=f"random mean (CPR {rm.cpr:.3f}, CMD {rm.cmd:.3f})",
        )
    styles = {"exact": ("exact effects", LOWERS), "first_pass": ("first pass", FIRST_PASS_COLOR)}
    for name, (label, color) in styles.items():
        if name in ranks:
            r = ranks[name]
            ax.plot(
                sizes,
                r.f,
                color=color,
                lw=1.8,
                marker="o",
                ms=3,
                label=f"{label} (CPR {r.cpr:.3f}, CMD {r.cmd:.3f})",
            )
    ax.axhline(1.0, color="black", lw=0.6)
    ax.axhline(0.0, color="black", lw=0.6)
    faith = record.faithfulness
    if curve.circuit_size and faith is not None and faith.kept is not None:
        span = curve.clean - curve.empty
        reference = 0.0 if record.readout is None else record.readout.reference
        kept_value = reference + faith.kept * (curve.clean - reference)  # the readout, kept
        f_circuit = (kept_value - curve.empty) / span if span else float("nan")
        ax.plot(
            [curve.circuit_size],
            [f_circuit],
            marker="*",
            ms=13,
            color="black",
            ls="",
            label=f"discovered circuit ({curve.circuit_size} nodes): f = {f_circuit:.2f}",
        )
    ax.set_xscale("log")
    ticks = list(sizes)  # every size measured
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(k) for k in ticks], fontsize=8)
    ax.set_xlabel(f"P0 components kept clean, in rank order (of {curve.n_components})")
    ax.set_ylabel("faithfulness f(k)")
    ax.set_title(
        f"{record.model or '?'}: f = (m(C) - m(empty)) / (m(full) - m(empty)), "
        f"{record.counterfactual or '?'} counterfactual",
        fontsize=8,
    )
    fig.legend(fontsize=7, loc="outside lower center", ncol=2)
    return fig
