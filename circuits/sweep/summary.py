"""One view of a whole sweep: a row per job, a table, a figure and a page.

Rows are read from what is on disk (every job's status and, for a job that is done, its own
record), so the summary of a sweep is the same whichever run of it, or which of two concurrent
sweeps, writes it last. Each row holds the job's axes and its headline numbers:

* ``sink``: the clean sink score of the receiver layers (discover: Gu et al.'s alpha_0 over
  layers 2..last; measure: the mean sink score of layers 2..last);
* ``sink_rate``: measure's sink rate from layer 2 (heads with sink score >= eps);
* ``circuit``, ``kept``, ``ablated``, ``floor``, ``sink_present`` (discover);
* ``wall_s``, ``peak_rss_mb`` (the job's child process), ``status`` and ``reason``;
* ``log``: the job's stderr log on the cluster (submitit writes its stdout beside it), for a
  job submitted to SLURM.

Files: ``summary.jsonl`` (one JSON object a line), ``summary.csv`` and ``report.html`` (the
table and ``circuits.viz.sweep_figure``'s figure, inline).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from circuits.circuit.record import DiscoveryRecord
from circuits.core.atomic import write_text
from circuits.core.conventions import PATCHING_FILE
from circuits.core.errors import MissingDataError
from circuits.core.records import finite, load_measure, load_result
from circuits.sweep.cluster import read_submission
from circuits.sweep.jobs import DONE, is_complete, job_paths, read_status

SUMMARY_JSONL = "summary.jsonl"
SUMMARY_CSV = "summary.csv"
REPORT = "report.html"
SPEC_COPY = "sweep.json"
COLUMNS = (
    "id",
    "command",
    "model",
    "checkpoint",
    "counterfactual",
    "prompts",
    "status",
    "reason",
    "sink",
    "sink_rate",
    "sink_present",
    "circuit",
    "kept",
    "ablated",
    "floor",
    "wall_s",
    "peak_rss_mb",
    "log",
)


def _discover_numbers(out: Path) -> dict[str, Any]:
    rec = DiscoveryRecord.of(load_result(out, "discover"), str(out / PATCHING_FILE))
    faith = rec.faithfulness
    return {
        "sink": rec.clean_sink(),
        "sink_present": None if rec.sink_baseline is None else rec.sink_baseline.present,
        "circuit": list(rec.circuit or []),
        "kept": None if faith is None else faith.kept,
        "ablated": None if faith is None else faith.ablated,
        "floor": None if faith is None else faith.floor,
        "effects": {
            name: row.relative_to(rec.effect_span()) for name, row in rec.exact_effects().items()
        },
    }


def _measure_numbers(out: Path) -> dict[str, Any]:
    data = load_measure(out)
    later = [row["sink_score"] for row in data.get("layers", []) if row["layer"] >= 2]
    return {
        "sink": sum(later) / len(later) if later else None,
        "sink_rate": data.get("sink_rate_from_layer2"),
    }


def _log_of(root: Path, job_id: str) -> str | None:
    """The job's log on the cluster (its stderr, beside its stdout), when it was submitted."""
    sub = read_submission(root, job_id)
    return None if sub is None else sub.get("stderr")


def job_row(root: Path, job: dict[str, Any]) -> dict[str, Any]:
    """The summary row of one job, from its status file and (when done) its record."""
    out, status_file, _ = job_paths(root, job["id"])
    status = read_status(status_file) or {}
    row: dict[str, Any] = {k: job.get(k) for k in ("id", "command", "model", "checkpoint")}
    row.update(
        counterfactual=job.get("counterfactual"),
        prompts=job.get("prompts"),
        status=status.get("status", "not run"),
        reason=status.get("reason", ""),
        wall_s=status.get("wall_s"),
        peak_rss_mb=status.get("peak_rss_mb"),
        log=_log_of(root, job["id"]),
    )
    if is_complete(out):
        row["status"] = DONE
        row["reason"] = ""
        read = _discover_numbers if job["command"] == "discover" else _measure_numbers
        row.update(read(out))
    return row


def sweep_rows(root: Path, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [job_row(root, job) for job in jobs]


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        flat = {
            k: (
                json.dumps(row.get(k))
                if isinstance(row.get(k), dict)
                else " ".join(row[k])
                if isinstance(row.get(k), list)
                else row.get(k)
            )
            for k in COLUMNS
        }
        writer.writerow(flat)
    return buf.getvalue()


def write_summary(root: Path, rows: list[dict[str, Any]], spec: dict[str, Any]) -> list[Path]:
    """``sweep.json`` (the spec), ``summary.jsonl``, ``summary.csv``, ``report.html``, each
    written atomically. Every text is made before the first file is written, and the spec is
    written first, so a summary never lies next to a missing or older spec."""
    from circuits.viz.sweep_page import sweep_page

    texts = {
        SPEC_COPY: json.dumps(spec, indent=2, allow_nan=False) + "\n",
        SUMMARY_JSONL: "".join(
            json.dumps({k: row.get(k) for k in (*COLUMNS, "effects")}, allow_nan=False) + "\n"
            for row in finite(rows)
        ),
        SUMMARY_CSV: _csv(rows),
    }
    try:
        texts[REPORT] = sweep_page(rows, spec)
    except MissingDataError:
        pass
    return [write_text(root / name, text) for name, text in texts.items()]
