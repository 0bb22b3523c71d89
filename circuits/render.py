"""Figures and reports. Static figures are matplotlib (Agg backend, PNG + SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from circuits.io import atomic_path  # noqa: E402


def save_figure(fig, stem: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``stem.png`` / ``stem.svg`` atomically and close it."""
    written = []
    for fmt in formats:
        target = Path(f"{stem}.{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def layer_profile_figure(metrics: dict[str, Any]):
    """Per-layer sink (attn_to_p0, sink score, sink rate) and P0 vs rest residual norm (log y).

    ``metrics`` is the content of ``sink_metrics.json``.
    """
    layers = metrics["layers"]
    xs = [row["layer"] for row in layers]
    fig, (ax_sink, ax_norm) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax_sink.plot(xs, [r["attn_to_p0"] for r in layers], "o-", label="attn_to_p0 (queries ≥ 1)")
    ax_sink.plot(xs, [r["sink_score"] for r in layers], "s--", label="sink score α₀ (Gu et al.)")
    ax_sink.bar(
        xs,
        [r["sink_rate"] for r in layers],
        alpha=0.2,
        color="gray",
        label=f"sink rate (ε = {metrics.get('eps', 0.3)})",
    )
    ax_sink.set_ylim(0, 1.02)
    ax_sink.set_xlabel("layer")
    ax_sink.set_ylabel("attention to position 0")
    ax_sink.legend(fontsize=8, loc="upper left")
    ax_sink.set_title("attention sink on P0")

    ax_norm.semilogy(xs, [r["p0_norm"] for r in layers], "o-", color="C3", label="P0 residual norm")
    ax_norm.semilogy(
        xs,
        [r["rest_norm_median"] for r in layers],
        "o-",
        color="C7",
        label="median norm, positions ≥ 1",
    )
    ax_norm.set_xlabel("layer (resid_post)")
    ax_norm.set_ylabel("l2 norm (log)")
    ax_norm.legend(fontsize=8, loc="upper left")
    ax_norm.set_title("P0 vs rest residual norm")
    bos = "with BOS" if metrics.get("bos") else "no BOS"
    fig.suptitle(
        f"{metrics.get('model', '?')} · {bos} · {metrics.get('n_tokens', '?')} tokens", fontsize=10
    )
    fig.tight_layout()
    return fig
