"""``run_sweep``: expand a spec, run its jobs on an executor, and write the sweep's summary.

Everything is checked before the first job runs or anything is created: the spec, every job's
command line (``circuits.sweep.spec.expand``) and ``out`` (a folder, or a path one can be made
at). A re-run of the same spec into the same folder skips every job whose folder is complete and
verified, skips the jobs that failed before unless ``retry_failed``, and runs the rest; a job
another sweep is running at that moment is reported ``busy`` and left to it. The summary is
rewritten from what is on disk at the end of every run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from circuits.core.arguments import Count, checked
from circuits.core.outputs import check_folder
from circuits.core.progress import status as say_line
from circuits.sweep.executors import ClusterOptions, run_local, run_submitit
from circuits.sweep.jobs import BUSY, FAILED
from circuits.sweep.spec import expand, read_spec
from circuits.sweep.summary import sweep_rows, write_summary


@dataclass
class SweepOutcome:
    """This run's status of every job (done / failed / skipped / busy) and the summary rows."""

    results: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    files: list[Path]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Jobs that failed: now, or before and not retried."""
        return [r for r in self.results if r["status"] == FAILED or r.get("failed_before")]

    @property
    def busy(self) -> list[dict[str, Any]]:
        """Jobs another sweep on the same folder is running (no result here yet)."""
        return [r for r in self.results if r["status"] == BUSY]

    def unfinished(self) -> str | None:
        """One line on the jobs without a result (failed or busy) and what to do; None when
        every job has one (the sweep's exit code is 1 exactly when this is a line)."""
        failed, busy = len(self.failed), len(self.busy)
        if not failed and not busy:
            return None
        parts = []
        if failed:
            parts.append(
                f"{failed} failed (reasons above and in summary.csv; fix and re-run with "
                "--retry-failed)"
            )
        if busy:
            parts.append(
                f"{busy} busy in another sweep on this folder (re-run once it ends to summarise "
                "them)"
            )
        return f"{failed + busy} of {len(self.results)} jobs have no result: " + "; ".join(parts)

    def table(self) -> str:
        """One line per job: status, id, and why (failed: the job's own one-line error)."""
        lines = []
        for r in self.results:
            why = f"  {r['reason']}" if r.get("reason") else ""
            lines.append(f"{r['status']:<9} {r['job']['id']}{why}")
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        lines.append(
            ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + f" of {len(self.results)} jobs"
        )
        return "\n".join(lines)


@checked
def run_sweep(
    spec_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    executor: Literal["local", "submitit-local", "slurm"] = "local",
    workers: Count = 1,
    retry_failed: bool = False,
    cluster: ClusterOptions | None = None,
    wait: bool = True,
    progress: bool = True,
) -> SweepOutcome:
    """Run the sweep of ``spec_path`` into folder ``out`` (module docstring)."""
    spec = read_spec(spec_path)
    root = check_folder(out)
    jobs = [j.describe() for j in expand(spec, base=Path(spec_path).resolve().parent)]
    root.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(jobs), desc="sweep", unit="job", disable=not progress)

    def report(result: dict[str, Any]) -> None:
        bar.update(1)
        if progress and result["status"] == FAILED:
            say_line(f"failed: {result['job']['id']}: {result.get('reason')}")

    try:
        if executor == "local":
            results = run_local(
                jobs, root, workers=workers, retry_failed=retry_failed, on_result=report
            )
        else:
            results = run_submitit(
                jobs,
                root,
                kind=executor,
                options=cluster or ClusterOptions(),
                retry_failed=retry_failed,
                on_result=report,
                wait=wait,
            )
    finally:
        bar.close()
    rows = sweep_rows(root, jobs)
    files = write_summary(root, rows, spec.model_dump())
    return SweepOutcome(results, rows, files)
