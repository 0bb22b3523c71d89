"""The two discover figures drawn as PNG files: path patching into K, and faithfulness per
receiver layer. ``circuits.report`` draws them into the result directory and embeds them; the
other discover figures (component and head heatmaps, the circuit graph) live in ``circuits.render``.

Everything is drawn from ``patching.json``'s record, so a report can be rebuilt from the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from circuits.io import atomic_path
from circuits.render import plt  # render picks the backend (Agg outside Jupyter)


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def path_figure(record: dict[str, Any], path: Path) -> Path | None:
    pk = record.get("paths_k")
    if not pk:
        return None
    senders: list[str] = []
    cells: dict[tuple[str, int], float] = {}
    for r in pk["effects"]:
        s, rec = r["sites"][0]["name"], r["sites"][1]
        if s not in senders:
            senders.append(s)
        cells[(s, rec["layer"])] = r["relative"] if r["relative"] is not None else np.nan
    layers = sorted({la for _, la in cells})
    grid = np.array([[cells.get((s, la), np.nan) for la in layers] for s in senders])
    lim = np.nanmax(np.abs(grid)) or 1.0
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(layers) + 2), 0.45 * len(senders) + 1.6))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(senders)), senders, fontsize=8)
    ax.set_xticks(range(len(layers)), [str(la) for la in layers], fontsize=7)
    ax.set_xlabel("receiver layer (K input of all its heads)")
    fig.colorbar(im, ax=ax, label="sink change at that layer / its clean sink")
    ax.set_title("path patching: sender at P0 -> K of a later layer (direct path)")
    return _save(fig, path)


def faithfulness_figure(record: dict[str, Any], path: Path) -> Path | None:
    f = record["faithfulness"]
    if not f.get("per_receiver"):
        return None
    layers = record["receiver_layers"]
    clean = [record["clean"]["per_receiver_layer"][str(la)] if str(la) in record["clean"]["per_receiver_layer"]
             else record["clean"]["per_receiver_layer"][la] for la in layers]
    through = f.get("core_kept_through_layer") or []
    backups = (record.get("backups") or {}).get("nodes") or []
    if through:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.4), width_ratios=(7, 5))
        xs = [row["layer"] for row in through]
        ys = [row["kept"] for row in through]
        ax2.plot(xs, ys, "-o", ms=3, color="#2ca02c", label="core circuit kept")
        if backups:
            ax2.axhline(f["kept"], color="#1f77b4", ls="-.", lw=1,
                        label=f"with backups {', '.join(backups)}: all others ablated")
        ax2.axhline(f["floor"], color="#9e9e9e", ls="--", lw=1, label="all P0 components ablated")
        ax2.axhline(1.0, color="k", lw=0.8, label="clean")
        ax2.set_xlabel("L: non-circuit P0 components ablated in layers <= L")
        ax2.set_ylabel("sink / clean sink")
        ax2.set_ylim(0, max(1.05, *ys))
        ax2.legend(fontsize=7)
        ax2.set_title("circuit kept: where the rest is needed")
    else:
        fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(layers, clean, "k-o", ms=3, label="clean")
    for vals, label, color in zip(f["per_receiver"], ("circuit kept, rest ablated", "circuit ablated", "all P0 components ablated"),
                                  ("#2ca02c", "#d62728", "#9e9e9e"), strict=True):
        ax.plot(layers, vals, "-o", ms=3, color=color, label=label)
    ax.set_xlabel("receiver layer")
    ax.set_ylabel("sink score (mean over heads)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("faithfulness per receiver layer")
    return _save(fig, path)
