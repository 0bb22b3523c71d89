"""A sweep's jobs on a SLURM cluster (through submitit): what was submitted, whether it still
runs, why it ended, and where its log is.

Submitting writes ``jobs/<id>.submitted.json`` beside the job's status: the cluster's job id
and the paths of its stdout / stderr logs. A later run of the same sweep (after ``--no-wait``, or
after the sweep process was stopped) asks the cluster for that job's state before it submits
anything: a job still queued or running is waited for (or, with ``--no-wait``, reported
``submitted``), never submitted twice. A task that ends without writing its status (``scancel``,
the time limit, a lost node) is recorded ``failed`` with a one-line reason naming the cluster's
state and the log, so ``--retry-failed`` runs it again. States come from ``sacct``, else
``squeue`` (a cluster without accounting, where submitit itself would report ``UNKNOWN``); a job
neither knows has ended.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from circuits.core.atomic import write_json
from circuits.sweep.jobs import FAILED, JOBS_DIR, job_paths, read_status, record_failure

SUBMITTED_SUFFIX = ".submitted.json"
ACTIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}
)
"""SLURM states of a job that has not ended (``squeue``'s and ``sacct``'s names)."""
POLL_S = 2.0


def submission_path(root: Path, job_id: str) -> Path:
    return root / JOBS_DIR / f"{job_id}{SUBMITTED_SUFFIX}"


def record_submission(root: Path, job: dict[str, Any], handle: Any) -> dict[str, Any]:
    """Write what the cluster was given for ``job`` (its job id and log paths)."""
    record = {
        "cluster_job_id": str(handle.job_id),
        "stdout": str(handle.paths.stdout),
        "stderr": str(handle.paths.stderr),
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "reported": False,
    }
    path = submission_path(root, job["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return record


def read_submission(root: Path, job_id: str) -> dict[str, Any] | None:
    return read_status(submission_path(root, job_id))


def mark_reported(root: Path, job_id: str) -> None:
    """A run of the sweep has reported what became of the job's last submission: later runs
    read the job's status from disk as for any other job."""
    sub = read_submission(root, job_id)
    if sub is not None and not sub.get("reported"):
        write_json(submission_path(root, job_id), {**sub, "reported": True})


def is_active(state: str) -> bool:
    """Whether a SLURM state (``"RUNNING"``, ``"CANCELLED by 0"``, ...) is one of a job that
    has not ended."""
    return (state.split() or ["UNKNOWN"])[0] in ACTIVE_STATES


def slurm_job(folder: Path, cluster_job_id: str) -> Any:
    """submitit's handle on a SLURM job submitted earlier (its state, logs and result)."""
    from submitit.slurm.slurm import SlurmJob

    return SlurmJob(folder=folder, job_id=cluster_job_id)


def _ask(argv: list[str]) -> str:
    """The first word a SLURM client prints ("" when it prints nothing or cannot be run)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def cluster_state(handle: Any) -> str:
    """The job's SLURM state now: the accounting's (``sacct``), else the queue's (``squeue``: a
    cluster without accounting, or a job the accounting has not recorded yet), else
    ``UNKNOWN`` (neither knows it: it has ended)."""
    job = str(handle.job_id)
    return (
        _ask(["sacct", "-X", "-n", "-P", "-j", job, "-o", "State"])
        or _ask(["squeue", "-h", "-j", job, "-o", "%T"])
        or "UNKNOWN"
    )


def final_state(handle: Any, settle_s: float = 20.0) -> str:
    """The state a job ended in: ``cluster_state``, asked again for up to ``settle_s`` while it
    is ``UNKNOWN`` (the accounting records a cancelled job a moment after the queue drops it)."""
    deadline = time.monotonic() + settle_s
    state = cluster_state(handle)
    while state.startswith("UNKNOWN") and time.monotonic() < deadline:
        time.sleep(1.0)
        state = cluster_state(handle)
    return state


def ended_reason(handle: Any, err: BaseException | None = None, state: str | None = None) -> str:
    """One line on a cluster task that ended without a status of its own: its state (``state``
    when the caller has asked already, else ``final_state``) and log."""
    state = state or final_state(handle)
    first = "" if err is None else str(err).strip().splitlines()[0][:200]
    log = getattr(getattr(handle, "paths", None), "stderr", None)
    return (
        f"cluster job {handle.job_id} ended {state}"
        + (f" ({type(err).__name__}: {first})" if first else "")
        + (f"; log: {log}" if log else "")
    )


def wait_until_ended(handle: Any, poll_s: float = POLL_S) -> str:
    """Poll ``handle``'s state until the job has ended; its last state."""
    while True:
        state = cluster_state(handle)
        if not is_active(state):
            return state
        time.sleep(poll_s)


def outcome_of_earlier(root: Path, job: dict[str, Any], handle: Any, since: str) -> dict:
    """What became of a job submitted by an earlier run, once it ended: the status its task
    wrote after ``since`` (the submission's time), or a failure recorded with the cluster's
    state (a task killed before it could write one; a task whose child was killed as the
    cluster cancelled it names that state too)."""
    status = read_status(job_paths(root, job["id"])[1])
    fresh = status is not None and str(status.get("finished", "")) >= since
    if fresh and status["status"] != FAILED:  # type: ignore[index]
        return {**status, "job": job}  # type: ignore[dict-item]
    state = final_state(handle)
    if fresh and state.split()[0] in ("COMPLETED", "FAILED"):  # the job's own failure
        return {**status, "job": job}  # type: ignore[dict-item]
    said = f" (the job said: {status['reason']})" if fresh and status else ""  # type: ignore[index]
    return record_failure(root, job, ended_reason(handle, state=state) + said)
