"""The live monitor's signal beside the loss curve (``circuits.emergence.monitor``): does the P0
signal settle before, with or after the loss?"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from circuits.core.errors import MissingDataError
from circuits.metrics.convergence import settling_step
from circuits.viz.style import new_figure


def convergence_figure(
    rows: list[dict[str, Any]],
    *,
    title: str = "",
    band: float = 0.1,
) -> Figure:
    """Top: the P0 signal per evaluation (the downstream sink strength, the share of the sink
    carried by blocks 0-1 -- the P0-stream estimate at every evaluation, the exact patching
    where it ran -- and the share of P0's norm growth made in blocks 0-1), the step the monitor
    called it converged marked; bottom: the eval loss (nats/token). Both panels mark the settling
    steps (``settling_step``, within ``band`` of the total change) of the sink strength and of
    the loss, on a shared step axis."""
    if not rows:
        raise MissingDataError("the monitor has no rows: train with --monitor-every N")
    steps = [r["step"] for r in rows]
    fig = new_figure(8, 5.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    top.plot(steps, [r["sink_strength"] for r in rows], color="#1f77b4", label="sink strength")
    est = [
        (r["step"], r["share_l01_estimate"]) for r in rows if r["share_l01_estimate"] is not None
    ]
    if est:
        top.plot(
            *zip(*est, strict=True), color="#2ca02c", label="share of sink in blocks 0-1 (estimate)"
        )
    exact = [
        (r["step"], r["ablation_share_l01"])
        for r in rows
        if r.get("ablation_share_l01") is not None
    ]
    if exact:
        top.plot(*zip(*exact, strict=True), "o", ms=4, color="#2ca02c", mfc="none",
                 label="share in blocks 0-1 (exact patching)")  # fmt: skip
    growth = [
        (r["step"], r["norm_growth_share_l01"])
        for r in rows
        if r["norm_growth_share_l01"] is not None
    ]
    if growth:
        top.plot(
            *zip(*growth, strict=True),
            color="#ff7f0e",
            ls="--",
            label="share of P0 norm growth in blocks 0-1",
        )
    converged = next(
        (r["converged_step"] for r in reversed(rows) if r.get("converged_step") is not None), None
    )
    sink_settled = settling_step(steps, [r["sink_strength"] for r in rows], band)
    loss_settled = settling_step(steps, [r["eval_loss"] for r in rows], band)
    pct = f"{band:.0%}"
    marks = [
        (converged, "#9467bd", "-", f"monitor: converged (step {converged})"),
        (
            sink_settled,
            "#1f77b4",
            "--",
            f"sink strength within {pct} of final (step {sink_settled})",
        ),
        (loss_settled, "#d62728", ":", f"loss within {pct} of final (step {loss_settled})"),
    ]
    for ax in (top, bottom):
        for step, color, style, label in marks:
            if step is not None:
                ax.axvline(step, color=color, lw=1.2, ls=style, label=label)
    top.set_ylabel("sink score / share")
    top.set_ylim(0, 1.05)
    top.legend(fontsize=7, loc="lower right")
    top.set_title(title or "P0 sink signal during training, beside the loss", fontsize=9)
    bottom.plot(steps, [r["eval_loss"] for r in rows], color="k", label="eval loss")
    bottom.set_ylabel("eval loss (nats/token)")
    bottom.set_xlabel("training step")
    bottom.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
