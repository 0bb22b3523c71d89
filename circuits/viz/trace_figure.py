"""The emergence trace (``trace.json``) drawn against the training step, phases shaded."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

PHASE_COLORS = {
    "absent": "#ffffff",
    "wandering": "#fde0c5",
    "transition": "#fff3b0",
    "stable": "#d6f5d6",
}


def trace_figure(trace: dict[str, Any]) -> Figure:
    """Metric vs step (log x): attn_to_p0, sink_score and P0 norm ratio per layer, the layers-0-1
    shares and the loss, with the phases shaded."""
    cps = trace["checkpoints"]
    steps = [max(c["step"], 0.5) for c in cps]  # step 0 drawn at 0.5 on the log axis
    n_layers = len(cps[0]["layers"])
    fig = Figure(figsize=(19, 8), layout="constrained")
    axes = fig.subplots(2, 4)
    for ax in axes.flat:
        for i, c in enumerate(cps):
            lo = steps[i] if i == 0 else math.sqrt(steps[i - 1] * steps[i])
            hi = steps[i] if i == len(cps) - 1 else math.sqrt(steps[i] * steps[i + 1])
            ax.axvspan(lo, hi, color=PHASE_COLORS[c["phase"]], lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("step")
    cmap = matplotlib.colormaps["viridis"]
    for key, ax, title in [
        ("attn_to_p0", axes[0, 0], "attention to P0 (queries >= 1)"),
        ("sink_score", axes[0, 1], "sink score alpha_0 (Gu et al.)"),
        ("p0_norm_ratio", axes[0, 2], "P0 norm / median other norm"),
    ]:
        for layer in range(n_layers):
            ax.plot(
                steps,
                [c["layers"][layer][key] for c in cps],
                marker=".",
                color=cmap(layer / max(1, n_layers - 1)),
                label=f"L{layer}",
            )
        ax.set_title(title)
        ax.legend(fontsize=7)
    axes[0, 1].axhline(trace["criteria"]["eps"], color="k", ls=":", lw=1)
    axes[0, 2].set_yscale("log")
    ax = axes[1, 0]
    first_k = trace["eval"]["first_k"]
    for k in range(first_k):
        ax.plot(steps, [c["key_attention"][k] for c in cps], marker=".", label=f"key {k}")
    ax.set_title("downstream attention to the first keys")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for key, label in [
        ("norm_growth_share_l01", "P0 norm growth"),
        ("ablation_share_l01", "ablation effect"),
    ]:
        ax.plot(
            steps,
            [c[key] if c[key] is not None else float("nan") for c in cps],
            marker="o",
            label=label,
        )
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("share in layers 0-1")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    ax.plot(steps, [c["eval_loss"] for c in cps], marker=".", label="eval loss")
    ax.set_title("loss (nats/token)")
    ax.legend(fontsize=7)
    _destinations_panel(axes[0, 3], steps, cps)
    _top_token_panel(axes[1, 3], steps, cps)
    fig.suptitle(f"{_title(trace)}  (shading: wandering / transition / stable)")
    return fig


def _title(trace: dict[str, Any]) -> str:
    cfg = trace.get("config")
    name = Path(trace.get("run") or trace.get("source") or "trace").name
    if not cfg:
        return f"{trace.get('source', name)} bos={trace['bos']}"
    extra = " P0 token embedding zeroed" if cfg.get("zero_p0_embedding") else ""
    return (
        f"{name}: {cfg['n_layers']}L d{cfg['d_model']} {cfg['n_heads']}h {cfg['positional']} "
        f"{cfg['data']} bos={trace['bos']}{extra}"
    )


DESTINATIONS = (("p0", "P0"), ("self", "self"), ("prev", "previous token"), ("other", "other"))


def _destinations_panel(ax, steps: list[float], cps: list[dict[str, Any]]) -> None:
    """Where queries q >= 2 attend, per layer (line style) and destination (colour)."""
    if "destinations" not in cps[0]["layers"][0]:
        ax.set_title("(no attention destinations in this trace)")
        return
    styles = ["-", "--", ":", "-."]
    for d, (key, label) in enumerate(DESTINATIONS):
        for layer in range(len(cps[0]["layers"])):
            ax.plot(
                steps,
                [c["layers"][layer]["destinations"][key] for c in cps],
                color=f"C{d}",
                ls=styles[layer % len(styles)],
                label=f"{label} L{layer}",
            )
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("where queries q >= 2 attend (line style: layer)")
    ax.legend(fontsize=6, ncol=2)


def _top_token_panel(ax, steps: list[float], cps: list[dict[str, Any]]) -> None:
    """The key token id that receives the most attention, per layer, with its share."""
    if "destinations" not in cps[0]["layers"][0]:
        ax.set_title("(no attention destinations in this trace)")
        return
    for layer in range(len(cps[0]["layers"])):
        rows = [c["layers"][layer]["destinations"] for c in cps]
        ax.plot(steps, [r["top_token_share"] for r in rows], marker=".", label=f"L{layer}")
        last = rows[-1]
        ax.annotate(
            f"id {last['top_token_id']}",
            (steps[-1], last["top_token_share"]),
            fontsize=7,
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("share of attention to the most-attended token id")
    ax.legend(fontsize=7)
