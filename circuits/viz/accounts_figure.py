"""One figure of ``p0-circuits accounts``: which account of the P0 sink each result supports.

Four panels, each titled with its question:

(a) first-ness or position: the sink score of P0 and of the token at ``s`` under each condition
    (bars, 0..1), P0's clean sink as a dashed line;
(b) the same components: each early component's effect on P0's sink (shift) and on the
    segment's sink under the document mask, as a percentage; bars coloured by the effect
    convention (blue: the patch lowers the sink), hatched for the segment;
(c) key norm or direction: per receiver layer, the part of the attention to P0 above a typical
    key due to P0's key norm and to its direction;
(d) no-op sinks: P0's value norm over the other positions' per receiver layer (1: as large).

A line under the panels gives the massive-dimension result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from circuits.viz.style import effect_color, new_figure

CONDITIONS = [
    ("p0_sink", "P0\n(clean)"),
    ("p0_at_position_s", "P0 given\nposition s"),
    ("token_s_plain", "token s\n(plain)"),
    ("token_s_first_of_segment", "token s\nfirst of\na segment"),
    ("token_s_at_position_0", "token s\ngiven\nposition 0"),
]


def accounts_figure(data: dict[str, Any]) -> Figure:
    """The four panels of the module docstring from an ``accounts.json`` record."""
    fig = new_figure(13.0, 9.6)
    (a, b), (c, d) = fig.subplots(2, 2)
    s = data["segment_start"]
    fig.suptitle(
        f"{data['model']} ({'BOS' if data['bos'] else 'no BOS'} at P0): competing accounts of the "
        f"P0 sink, {data['n_prompts']} prompts x {data['n_tokens']} tokens, s = {s}"
    )
    _positions(a, data, s)
    _components(b, data, data["counterfactual"]["name"])
    _key_split(c, data)
    _value_norm(d, data)
    fig.text(0.01, 0.01, _massive_line(data["massive_dims"]), fontsize=9, va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    return fig


def _positions(ax, data: dict[str, Any], s: int) -> None:
    pos = data["positions"]
    values = [pos[k] for k, _ in CONDITIONS]
    ax.bar(
        range(len(values)), values, color=["#444444", "#888888", "#bbbbbb", "#1f77b4", "#ff7f0e"]
    )
    ax.axhline(pos["p0_sink"], color="black", ls="--", lw=0.8, label="P0's clean sink score")
    for i, v in enumerate(values):
        ax.text(i, v + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(values)), [label for _, label in CONDITIONS], fontsize=8)
    ax.set_ylim(0, max(1.0, max(values) * 1.15))
    ax.set_ylabel("sink score α of the key\n(mean over queries ≥ key of A[q, key])")
    ax.set_title("(a) does the sink follow the causal mask (first-ness)\nor the position?")
    ax.legend(loc="upper right", fontsize=8)


def _components(ax, data: dict[str, Any], cf: str) -> None:
    comps = data["segment_components"]
    names = list(comps)
    x = np.arange(len(names))
    for offset, key, hatch, label in (
        (-0.2, "p0_effect", None, f"plain: at P0, {cf} counterfactual (% of P0's sink)"),
        (0.2, "segment_effect", "//", "hatched: at s under the mask, value from the unmasked "
         "run (% of the segment's sink above token s plain)"),
    ):  # fmt: skip
        vals = [100 * comps[n][key] for n in names]
        ax.bar(x + offset, vals, width=0.38, color=[effect_color(v) for v in vals],
               hatch=hatch, edgecolor="white", label=label)  # fmt: skip
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, names)
    ax.set_ylabel("effect on the sink (%)\nblue: the patch lowers it, red: raises it")
    ax.set_title("(b) does a segment's first token use\nP0's components (blocks 0-1)?")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=7, frameon=False)


def _massive_line(m: dict[str, Any]) -> str:
    if not m.get("dims"):
        return "massive dimensions: none found"
    dims = ", ".join(str(d) for d in m["dims"])
    return (
        f"massive dims {dims} hold {100 * m['share_of_p0_norm_squared']:.0f}% of P0's |x|² before "
        f"block {m['layer']}; patching only them ({m['counterfactual']}): "
        f"{100 * m['dims_only_effect']:+.1f}% of the sink, "
        f"all but them: {100 * m['all_but_dims_effect']:+.1f}%, the whole residual: "
        f"{100 * m['whole_residual_effect']:+.1f}%"
    )


def _key_split(ax, data: dict[str, Any]) -> None:
    layers = data["receivers"]
    norm, direction = data["key_split"]["norm"], data["key_split"]["direction"]
    x = np.asarray(layers, dtype=float)
    ax.bar(x - 0.2, direction, width=0.4, color="#2ca02c",
           label="P0's key direction (Gu et al.: key bias)")  # fmt: skip
    ax.bar(x + 0.2, norm, width=0.4, color="#9467bd", label="P0's key norm (massive-norm accounts)")
    ax.plot(layers, np.add(norm, direction), "k.-", lw=0.8, label="sum: above a typical key")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("receiver layer")
    ax.set_ylabel("attention to P0 (queries ≥ 1)")
    ax.set_title(
        "(c) is the sink P0's key norm or its direction?\n(parts of the attention above a typical key's)"
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7, ncol=3, frameon=False)


def _value_norm(ax, data: dict[str, Any]) -> None:
    layers = data["receivers"]
    ax.plot(layers, data["value_norm"]["ratio"], "o-", color="#9467bd")
    ax.axhline(1.0, color="black", ls="--", lw=0.8, label="as large as another position's value")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("receiver layer")
    ax.set_ylabel("‖v₀‖ ÷ mean ‖vⱼ‖ (j ≥ 1), mean over heads")
    ax.set_title("(d) does the sink write little (a no-op sink)?\nP0's value norm at the receivers")
    ax.legend(loc="upper right", fontsize=8)
