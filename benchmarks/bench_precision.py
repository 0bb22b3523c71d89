"""What precision costs: ``measure`` and ``discover`` in bfloat16 and float16 against float32.

For each model, runs ``p0-circuits measure`` and ``p0-circuits discover`` (docs/precision.md's settings: 8
prompts x 64 tokens, ``shift``) once per dtype, each in a child process (wall time, peak RSS),
and compares every half-precision result with the float32 one on the same prompts:

* per-layer sink score (Gu et al.'s alpha_0): max |diff|;
* the exact single-component effects on the sink (relative to the clean sink): max |diff| and
  Spearman's rank correlation;
* the discovered circuit: the same members?;
* kept / ablated (faithfulness of the circuit each run discovered).

Writes ``OUT/precision.jsonl`` (one row per model and dtype) and ``OUT/precision.md`` (the table
docs/precision.md quotes). Run it with nothing else on the machine.

    python benchmarks/bench_precision.py --out results/precision [--models smollm2-135m gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16")


def _run(args: list[str]) -> tuple[float, float]:
    """Run ``p0-circuits ARGS`` in a child: (wall s, that child's own peak RSS MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "circuits", *args, "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        err = proc.stderr.read().strip() if proc.stderr else ""
        raise SystemExit(f"p0-circuits {' '.join(args)} failed: {err}")
    return wall, usage.ru_maxrss / 1024


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    for r, i in enumerate(order):
        ranks[i] = float(r)
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = _ranks(a), _ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb)


def _effects(record: dict) -> dict[str, float]:
    return {
        row["name"]: row["relative"]
        for row in record["components"]["effects"]
        if row.get("relative") is not None
    }


def compare(ref_measure: dict, ref: dict, measure: dict, disc: dict) -> dict:
    sink = [la["sink_score"] for la in measure["layers"]]
    ref_sink = [la["sink_score"] for la in ref_measure["layers"]]
    eff, ref_eff = _effects(disc), _effects(ref)
    names = sorted(set(eff) & set(ref_eff))
    return {
        "sink_max_abs_diff": max(abs(a - b) for a, b in zip(sink, ref_sink, strict=True)),
        "effect_max_abs_diff": max(abs(eff[n] - ref_eff[n]) for n in names),
        "effect_spearman": spearman([eff[n] for n in names], [ref_eff[n] for n in names]),
        "circuit": disc["circuit"],
        "same_circuit": sorted(disc["circuit"]) == sorted(ref["circuit"]),
        "kept": disc["faithfulness"]["kept"],
        "ablated": disc["faithfulness"]["ablated"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    rows = []
    for model in args.models:
        ref_m = ref_d = None
        for dtype in args.dtypes:
            m_dir, d_dir = work / f"{model}-{dtype}-m", work / f"{model}-{dtype}-d"
            _run(
                [
                    "measure",
                    "--model",
                    model,
                    "--dtype",
                    dtype,
                    "--max-tokens",
                    "64",
                    "--out",
                    str(m_dir),
                ]
            )
            wall, peak = _run(["discover", "--model", model, "--dtype", dtype, "--out", str(d_dir)])
            measure = json.loads((m_dir / "sink_metrics.json").read_text())
            disc = json.loads((d_dir / "patching.json").read_text())
            if dtype == "float32":
                ref_m, ref_d = measure, disc
            row = {"model": model, "dtype": dtype, "discover_wall_s": round(wall, 1)}
            row["discover_peak_rss_mb"] = round(peak)
            if ref_m is not None and ref_d is not None:
                row |= compare(ref_m, ref_d, measure, disc)
            rows.append(row)
            print(json.dumps(row), flush=True)
            with (args.out / "precision.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
    lines = [
        "| model | dtype | sink max \\|diff\\| | effect max \\|diff\\| | effect rank corr. | same circuit | kept | ablated | discover s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    every = [json.loads(x) for x in (args.out / "precision.jsonl").read_text().splitlines()]
    for r in every:  # every model measured into OUT so far
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['sink_max_abs_diff']:.4f} | "
            f"{r['effect_max_abs_diff']:.4f} | {r['effect_spearman']:.4f} | "
            f"{'yes' if r['same_circuit'] else 'no: ' + ', '.join(r['circuit'])} | "
            f"{r['kept']:.3f} | {r['ablated']:.3f} | {r['discover_wall_s']} | "
            f"{r['discover_peak_rss_mb']} |"
        )
    (args.out / "precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
