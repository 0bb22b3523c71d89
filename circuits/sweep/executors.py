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
from circuits.sweep.jobs import FAILED, run_job

EXECUTORS = ("local", "submitit-local", "slurm")
SUBMITIT_DIR = "submitit"


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
    folder = root / SUBMITIT_DIR / "%j"
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
    """Submit every job as one array; wait for each and report it (or, without ``wait``,
    return at once with the cluster's job ids)."""
    executor = _submitit_executor(kind, root, options)
    run = partial(run_job, root=str(root), retry_failed=retry_failed)
    with executor.batch():
        submitted = [executor.submit(run, job) for job in jobs]
    if not wait:
        return [
            {"status": "submitted", "reason": f"cluster job {s.job_id}", "job": job}
            for job, s in zip(jobs, submitted, strict=True)
        ]
    results: list[dict[str, Any]] = []
    for job, handle in zip(jobs, submitted, strict=True):
        try:
            result = handle.result()
        except Exception as err:  # noqa: BLE001 - a dead task is that job's failure
            result = _failed(job, err)
        on_result(result)
        results.append(result)
    return results
