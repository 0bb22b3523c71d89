"""One sweep job: run its command in a child process, and what became of it.

A job's output is the command's own output folder, ``DIR/jobs/<id>``, written all or nothing by
the command. Beside it the sweep keeps ``<id>.status.json`` (done / failed, the one-line reason,
wall time and the child's peak memory) and ``<id>.lock``, held while the job runs, so two sweeps
on one folder never run the same job at once. A job counts as done only when its folder's
manifest verifies. ``run_job`` is what every executor calls (in a thread, a local process, or a
SLURM task through submitit): it is importable and takes only plain data.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from circuits.core.arguments import Count, checked
from circuits.core.atomic import write_json
from circuits.core.errors import ChecksumError, UsageError
from circuits.core.manifest import verify_folder

JOBS_DIR = "jobs"
STATUS_SUFFIX = ".status.json"
LOCK_SUFFIX = ".lock"
DONE, FAILED, SKIPPED, BUSY, SUBMITTED = "done", "failed", "skipped", "busy", "submitted"


def job_paths(root: Path, job_id: str) -> tuple[Path, Path, Path]:
    """(output folder, status file, lock file) of a job in sweep folder ``root``."""
    jobs = root / JOBS_DIR
    return jobs / job_id, jobs / f"{job_id}{STATUS_SUFFIX}", jobs / f"{job_id}{LOCK_SUFFIX}"


def is_complete(out: Path) -> bool:
    """The job's folder exists and every file its manifest lists is there, unchanged."""
    if not out.is_dir():
        return False
    try:
        verify_folder(out)
    except ChecksumError:
        return False
    return True


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The child gets SIGTERM when the process that started it dies (Linux), so a killed sweep
    leaves no orphan still writing a job's folder."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _run_child(argv: list[str], threads: int | None) -> tuple[int, str, float, float]:
    """Run ``p0-circuits ARGV`` in a child; (exit code, last stderr line, wall s, peak RSS MB)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "circuits", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    assert proc.stderr is not None
    err_lines = [line.rstrip() for line in proc.stderr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    reason = next((line for line in reversed(err_lines) if line.strip()), "")
    return proc.returncode, reason, wall, usage.ru_maxrss / 1024  # ru_maxrss: KiB on Linux


@checked
def run_job(
    job: dict[str, Any],
    root: str | os.PathLike,
    *,
    retry_failed: bool = False,
    threads: Count | None = None,
) -> dict[str, Any]:
    """Run one job (``Job.describe()``) into sweep folder ``root`` unless it is already done
    (verified) or failed before (unless ``retry_failed``), or another sweep is running it now.
    Returns its status: ``status`` (done / failed / skipped / busy), ``reason``, ``wall_s``,
    ``peak_rss_mb``, and the job."""
    missing = [k for k in ("id", "argv") if k not in job]
    if missing:
        raise UsageError(
            f"run_job(job=...): a job is Job.describe() of a spec's expand(); this one lacks "
            f"{', '.join(missing)}"
        )
    out, _, lock_file = job_paths(Path(root), job["id"])
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock_file), timeout=0):
            return _run_locked(job, Path(root), retry_failed, threads)
    except Timeout:
        return {"status": BUSY, "reason": "another sweep is running this job now", "job": job}


def already_settled(
    job: dict[str, Any], root: Path, retry_failed: bool = False
) -> dict[str, Any] | None:
    """The job's ``skipped`` status when it needs no run: complete and verified, or failed
    before and not to be retried; None when it must run. Every executor asks before it runs or
    submits a job (a cluster is sent only the jobs that need it)."""
    out, status_file, _ = job_paths(root, job["id"])
    before = read_status(status_file) or {}
    if is_complete(out):
        return {**before, "status": SKIPPED, "reason": "complete and verified", "job": job}
    if before.get("status") == FAILED and not retry_failed:
        return {
            **before,
            "status": SKIPPED,
            "reason": f"failed before ({before.get('reason')}); --retry-failed runs it again",
            "failed_before": True,
            "job": job,
        }
    return None


def record_failure(root: Path, job: dict[str, Any], reason: str, **extra: Any) -> dict[str, Any]:
    """Write the job's status as failed with a one-line ``reason`` (a cluster task that died
    before ``run_job`` could write it: cancelled, out of time, a node lost) and return it."""
    result = {
        "status": FAILED,
        "reason": " ".join(reason.split()),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
        "job": job,
    }
    write_json(job_paths(root, job["id"])[1], result)
    return result


def _run_locked(
    job: dict[str, Any], root: Path, retry_failed: bool, threads: int | None
) -> dict[str, Any]:
    settled = already_settled(job, root, retry_failed)
    out, status_file, _ = job_paths(root, job["id"])
    if settled is not None:
        return settled
    overwrite = ["--overwrite"] if out.exists() else []  # an unverifiable folder is redone
    code, reason, wall, rss = _run_child(
        [*job["argv"], "--out", str(out), "--quiet", *overwrite], threads
    )
    done = code == 0 and is_complete(out)
    if code < 0:  # a signal: the job did not fail by itself
        reason = f"killed by {signal.Signals(-code).name} (cancelled, out of time or memory?)"
    result = {
        "status": DONE if done else FAILED,
        "reason": "" if done else (reason or f"exit code {code}"),
        "exit_code": code,
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(rss, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "job": job,
    }
    write_json(status_file, result)
    return result
