"""``plan``'s peak against the measured peaks of ``bench_discover.py`` (``results/precision``).

Each line of ``results/precision/discover_*.jsonl`` is one measured discovery (its peak RSS, its
dtype, its prompts, and whether its prediction step ran); ``plan`` is asked the same question
and the difference is printed as a Markdown table (docs/precision.md).

    python benchmarks/plan_vs_measured.py            # plan against the measured peaks
    python benchmarks/plan_vs_measured.py --fits     # docs/precision.md's "what fits where" table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from circuits.patching.plan import GIB, plan  # noqa: E402
from circuits.zoo.shapes import shape_of  # noqa: E402

FILES = ("discover_smollm2.jsonl", "discover_gemma3.jsonl", "discover_1b_shape.jsonl")


FITS_MODELS = ("smollm2-135m", "gemma3-270m", "llama-3.2-1b", "llama-3.1-8b", "olmoe-1b-7b",
               "qwen3-30b-a3b", "llama-3.1-70b")  # fmt: skip
FITS_CARDS = ((1, 24.0), (1, 80.0), (2, 80.0), (8, 80.0))


def fits_table() -> None:
    """``plan`` in bfloat16 at 8 x 64 for each model on each card set (docs/precision.md)."""
    print(
        "| model | params (per token) | "
        + " | ".join(f"{n} × {g:g} GB" for n, g in FITS_CARDS)
        + " |"
    )
    print("|---|---|" + "---|" * len(FITS_CARDS))
    for name in FITS_MODELS:
        shape = shape_of(name)
        params = f"{shape.n_params / 1e9:.2f} B"
        if shape.active_params != shape.n_params:
            params += f" ({shape.active_params / 1e9:.2f} B)"
        cells = []
        for n, gb in FITS_CARDS:
            p = plan(shape, dtype="bfloat16", n_cards=n, card_gb=gb)
            cells.append(
                f"{p.peak_per_card / GIB:.1f} GB/card, {p.rows} rows, ~{p.gpu_seconds('h100'):.0f} s"
                if p.fits
                else "does not fit"
            )
        print(f"| {name} | {params} | " + " | ".join(cells) + " |")


def main() -> int:
    if "--fits" in sys.argv[1:]:
        fits_table()
        return 0
    root = Path(__file__).resolve().parents[1] / "results" / "precision"
    print("| model, prompts | dtype | prediction step | measured peak | `plan` | plan − measured |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for name in FILES:
        for line in (root / name).read_text().splitlines():
            run = json.loads(line)
            dtype = run["command"].split("--dtype ")[1].split()[0]
            ran = run["stage_timings_s"].get("prediction_effect", 0.0) > 0
            p = plan(shape_of(run["model"]), dtype=dtype, n_prompts=run["n_prompts"],
                     n_tokens=run["n_tokens"], prediction=ran)  # fmt: skip
            measured = run["peak_rss_mb"] * 2**20 / GIB
            planned = p.peak_per_card / GIB
            worst = max(worst, abs(planned - measured) / measured)
            print(
                f"| {run['model']}, {run['n_prompts']} × {run['n_tokens']} | {dtype} | "
                f"{'ran' if ran else 'no circuit: not run'} | {measured:.2f} GB | "
                f"{planned:.2f} GB | {100 * (planned - measured) / measured:+.0f} % |"
            )
    print(f"\nlargest |plan − measured| / measured: {100 * worst:.0f} % (target: within 25 %)")
    return 0 if worst <= 0.25 else 1


if __name__ == "__main__":
    raise SystemExit(main())
