"""Plot ``bench_scaling.py``'s JSON lines: time of the head grid against tokens (8 prompts) and
against prompts (64 tokens), per model, for ours, both TransformerLens baselines and the ideal.

    python benchmarks/plot_scaling.py results/performance/scaling.jsonl results/performance/scaling.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a script that writes a file, not a package figure
import matplotlib.pyplot as plt  # noqa: E402

SIDES = {
    "tl_s": "TL patching module",
    "batched_tl_s": "batched TL hook loop",
    "ours_s": "ours",
    "ideal_s": "ideal (layers to recompute)",
}


def main() -> int:
    rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.6 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        for j, (axis, fixed, fixed_value, label) in enumerate(
            [
                ("n_tokens", "n_prompts", 8, "tokens per prompt (8 prompts)"),
                ("n_prompts", "n_tokens", 64, "prompts (64 tokens each)"),
            ]
        ):
            ax = axes[i, j]
            sel = sorted((r for r in mine if r[fixed] == fixed_value), key=lambda r: r[axis])
            xs = [r[axis] for r in sel]
            for key, name in SIDES.items():
                if all(key in r for r in sel):
                    style = "--" if key == "ideal_s" else "-"
                    ax.plot(xs, [r[key] for r in sel], style, marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel(label)
            ax.set_ylabel("seconds (head grid)")
            ax.set_title(f"{model}: {sel[0]['patches']} head patches" if sel else model)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
