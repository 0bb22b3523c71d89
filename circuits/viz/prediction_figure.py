"""Does the P0 circuit matter for the model's predictions? The prediction step, drawn.

Two panels (next-token loss increase and KL to the clean distribution, both in nats): the
circuit patched, each random component set of its size (dots; the bar is their mean) and every
P0 component patched. The circuit's bar is drawn in the toolkit's "lowers the sink" blue: its
patch is the one that removes the sink.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from circuits.circuit.record import DiscoveryRecord
from circuits.core.errors import MissingDataError
from circuits.viz.style import LOWERS, new_figure

RANDOM_GREY = "#9e9e9e"
ALL_GREY = "#424242"


def prediction_figure(record: DiscoveryRecord | dict[str, Any]) -> Figure:
    """Loss increase and KL of the circuit, of random sets of its size, of every P0 component."""
    pred = DiscoveryRecord.of(record).prediction
    if pred is None:
        raise MissingDataError("patching.json has no prediction step (prediction)")
    rand = pred.random
    fig = new_figure(8, 3.2)
    axes = fig.subplots(1, 2)
    labels = [
        "circuit",
        f"random sets\n(n={rand.n_sets}, size {rand.size})",
        "every P0\ncomponent",
    ]
    for ax, key, mean_key, title in zip(
        axes,
        ("loss_increase", "kl"),
        ("loss_increase_mean", "kl_mean"),
        ("next-token loss increase (nats)", "KL(clean || patched) (nats)"),
        strict=True,
    ):
        dots = getattr(rand, key)
        values = [getattr(pred.circuit, key), getattr(rand, mean_key), getattr(pred.all_p0, key)]
        ax.bar(range(3), values, color=[LOWERS, RANDOM_GREY, ALL_GREY], width=0.6)
        ax.scatter([1] * len(dots), dots, s=12, color="black", zorder=3)
        top = max([*values, *dots])
        for x, v in enumerate(values):  # above the bar and, for the random sets, their dots
            y = max(v, max(dots)) if x == 1 else v
            ax.annotate(f"{v:.3g}", (x, y + 0.02 * top), ha="center", va="bottom", fontsize=7)
        ax.set_ylim(top=1.12 * top)
        ax.set_xticks(range(3), labels, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.axhline(0, color="black", lw=0.6)
    fig.suptitle(
        f"patched at the {pred.counterfactual} counterfactual; clean loss "
        f"{pred.clean_loss:.3f} nats",
        fontsize=8,
    )
    fig.tight_layout()
    return fig
