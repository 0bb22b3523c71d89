"""Where a sweep's jobs run: this machine, or a cluster through submitit.

* ``local`` (default): ``workers`` jobs at a time on this machine, each a child process
  (``circuits.sweep.jobs.run_job``); with several workers, each child gets
  ``cores // workers`` threads so the jobs do not fight over the cores.
* ``submitit-local``: submitit's own local executor (one process per job, managed by submitit):
  the same code path a cluster uses, runnable anywhere; the tests use it.
* ``slurm``: submitit's SLURM executor (a job array; ``--partition``, ``--gpus``, ``--time-min``,
  ``--mem-gb``, ``--cpus``, ``--array-parallelism``). Submitit is the library research groups
  already run SLURM sweeps with (and Hydra's submitit launcher); its logs go to
  ``DIR/submitit/``.

Every executor returns the jobs' statuses in the order given; a job that raised in its worker
(e.g. a node that died) is reported failed with the exception's line, never lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from circuits.core.arguments import Count, Positive, check_fields
from circuits.core.errors import UsageError
from circuits.sweep.cluster import (
    cluster_state,
    ended_reason,
    is_active,
    mark_reported,
    outcome_of_earlier,
    read_submission,
    record_submission,
    slurm_job,
    wait_until_ended,
)
from circuits.sweep.jobs import FAILED, SUBMITTED, already_settled, record_failure, run_job

EXECUTORS = ("local", "submitit-local", "slurm")
SUBMITIT_DIR = "submitit"
SUBMITTED_DIR_PATTERN = f"{SUBMITIT_DIR}/%j"
"""submitit's folder of each cluster job (``%j``: its job id), under the sweep's folder."""


@dataclass(frozen=True)
class ClusterOptions:
    """SLURM resources per job (submitit's ``update_parameters``)."""

    partition: str | None = None
    gpus: Annotated[int, Field(ge=0)] = 0
    cpus: Count = 2
    mem_gb: Positive = 16.0
    time_min: Count = 60
    array_parallelism: Count = 64

    def __post_init__(self) -> None:
        check_fields(self)  # before any job is submitted


def _failed(job: dict[str, Any], err: BaseException) -> dict[str, Any]:
    return {"status": FAILED, "reason": f"{type(err).__name__}: {err}", "job": job}


def run_local(
    jobs: Sequence[dict[str, Any]],
    root: Path,
    *,
    workers: int,
    retry_failed: bool,
    on_result: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    run = partial(run_job, root=str(root), retry_failed=retry_failed, threads=threads)
    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        for job, future in zip(jobs, futures, strict=True):
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - one job's crash is that job's failure
                result = _failed(job, err)
            on_result(result)
            results.append(result)
    return results


def _submitit_executor(kind: str, root: Path, options: ClusterOptions):
    try:
        import submitit
    except ImportError:
        raise UsageError(
            f"--executor {kind} needs submitit: pip install 'p0-circuits[cluster]' (or submitit)"
        ) from None
    folder = root / SUBMITTED_DIR_PATTERN
    if kind == "submitit-local":
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(timeout_min=options.time_min)
        return executor
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = {
        "timeout_min": options.time_min,
        "mem_gb": options.mem_gb,
        "cpus_per_task": options.cpus,
        "gpus_per_node": options.gpus,
        "slurm_array_parallelism": options.array_parallelism,
        "name": "p0-circuits-sweep",
    }
    if options.partition:
        params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    return executor


def run_submitit(
    jobs: Sequence[dict[str, Any]],
    root: Path,
    *,
    kind: str,
    options: ClusterOptions,
    retry_failed: bool,
    on_result: Callable[[dict[str, Any]], None],
    wait: bool = True,
) -> list[dict[str, Any]]:
    """Submit the jobs that need a run as one array (``circuits.sweep.cluster``: not the ones
    complete, failed before, or still queued / running from an earlier submission); wait for
    each and report it (or, without ``wait``, return at once with the cluster's job ids)."""
    executor = _submitit_executor(kind, root, options)
    results: dict[int, dict[str, Any]] = {}
    earlier: dict[int, tuple[Any, str]] = {}  # still running from an earlier submission
    to_submit: list[int] = []
    for i, job in enumerate(jobs):
        sub = read_submission(root, job["id"]) if kind == "slurm" else None
        if sub is not None and not sub.get("reported"):  # submitted by a run that did not wait
            handle = slurm_job(root / SUBMITTED_DIR_PATTERN, sub["cluster_job_id"])
            if is_active(cluster_state(handle)):
                earlier[i] = (handle, sub["submitted"])
                continue
            results[i] = outcome_of_earlier(root, job, handle, sub["submitted"])
            mark_reported(root, job["id"])
            if results[i]["status"] != FAILED or not retry_failed:
                on_result(results[i])
                continue
        else:
            settled = already_settled(job, root, retry_failed)
            if settled is not None:
                results[i] = settled
                on_result(settled)
                continue
        to_submit.append(i)
    run = partial(run_job, root=str(root), retry_failed=retry_failed)
    handles: dict[int, Any] = {}
    if to_submit:
        with executor.batch():
            submitted = [executor.submit(run, jobs[i]) for i in to_submit]
        for i, handle in zip(to_submit, submitted, strict=True):
            if kind == "slurm":
                record_submission(root, jobs[i], handle)
            handles[i] = handle
    for i, (handle, since) in earlier.items():
        if wait:
            wait_until_ended(handle)
            results[i] = outcome_of_earlier(root, jobs[i], handle, since)
            mark_reported(root, jobs[i]["id"])
        else:
            results[i] = _submitted(jobs[i], handle, "still queued or running")
        on_result(results[i])
    for i, handle in handles.items():
        if not wait:
            results[i] = _submitted(jobs[i], handle, "submitted")
        else:
            try:
                results[i] = handle.result()
            except Exception as err:  # noqa: BLE001 - a dead task is that job's failure
                results[i] = record_failure(root, jobs[i], ended_reason(handle, err))
            if kind == "slurm":
                mark_reported(root, jobs[i]["id"])
        on_result(results[i])
    return [results[i] for i in range(len(jobs))]


def _submitted(job: dict[str, Any], handle: Any, what: str) -> dict[str, Any]:
    return {"status": SUBMITTED, "reason": f"cluster job {handle.job_id}: {what}", "job": job}
