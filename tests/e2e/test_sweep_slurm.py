"""``p0-circuits sweep --executor slurm`` on a real SLURM cluster: the one-node cluster with
accounting that ``.ci/slurm_start.sh`` starts on localhost (CI starts it before the tests).
Skipped, with the reason, where no SLURM controller answers.

Checked against the cluster's own records (``sacct``): the array's states, that
``--array-parallelism 1`` runs its tasks one after the other, a task cancelled with ``scancel``
while it runs, and that a re-run after ``--no-wait`` waits for the jobs it submitted instead of
submitting them again."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from circuits.cli import main
from circuits.sweep.cluster import read_submission
from circuits.sweep.executors import ClusterOptions
from circuits.sweep.jobs import job_paths
from circuits.sweep.run import run_sweep
from circuits.sweep.spec import expand, read_spec
from tests._sweep_helpers import train_sweep_run, write_grid_spec

IGNORED = {"timings_s", "provenance", "command_line"}


def _slurm_down() -> str | None:
    """Why the SLURM tests cannot run here (None: a node answers idle, mixed or allocated)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM here (sinfo / sbatch not found); .ci/slurm_start.sh starts a test cluster"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo did not answer ({err})"
    states = set(out.stdout.split())
    if out.returncode != 0 or not states & {"idle", "mixed", "allocated"}:
        return f"no SLURM node up (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


WHY_NOT = _slurm_down()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))
OPTIONS = dict(cpus=1, mem_gb=1.0, time_min=10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The sweep tests' run (``tests/_sweep_helpers``) and their 6-job grid, ``grid.toml``."""
    root = train_sweep_run(tmp_path_factory.mktemp("slurm"))
    write_grid_spec(root, "grid.toml")
    return root


def _numbers(folder: Path) -> dict:
    data = json.loads((folder / "patching.json").read_text())
    return {k: v for k, v in data.items() if k not in IGNORED}


def _sacct(array_id: str) -> list[dict[str, str]]:
    """The cluster's accounting records of every task of an array (``sacct -X``)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", array_id, "-o", "JobID,State,Start,End,ExitCode"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    keys = ("job", "state", "start", "end", "exit")
    return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines() if line]


def _array_of(root: Path, jobs) -> str:
    ids = {read_submission(root, j.id)["cluster_job_id"].split("_")[0] for j in jobs}
    assert len(ids) == 1, ids  # one array per submission
    return ids.pop()


def test_a_sweep_on_slurm_equals_the_local_executor_job_for_job(run_dir, tmp_path):
    spec = run_dir / "grid.toml"
    jobs = expand(read_spec(spec), base=run_dir)
    assert len(jobs) == 6
    options = ClusterOptions(**OPTIONS, array_parallelism=1)
    slurm = run_sweep(spec, tmp_path / "slurm", executor="slurm", cluster=options, progress=False)
    assert [r["status"] for r in slurm.results] == ["done"] * 6, slurm.table()
    local = run_sweep(spec, tmp_path / "local", progress=False)
    assert [r["status"] for r in local.results] == ["done"] * 6
    for job in jobs:
        got = _numbers(job_paths(tmp_path / "slurm", job.id)[0])
        assert got == _numbers(job_paths(tmp_path / "local", job.id)[0]), job.id
    records = _sacct(_array_of(tmp_path / "slurm", jobs))
    for r in records:
        print("sacct", r["job"], r["state"], r["start"], r["end"], r["exit"])
    assert len(records) == 6 and {r["state"] for r in records} == {"COMPLETED"}
    spans = sorted((r["start"], r["end"]) for r in records)  # ISO times: ordered as text
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans  # --array-parallelism 1: one task at a time
    for row in slurm.rows:  # each job's log, from the summary
        log = Path(row["log"])
        assert log.is_file() and log.with_suffix(".out").is_file(), row["log"]
    csv = (tmp_path / "slurm/summary.csv").read_text().splitlines()
    assert csv[0].split(",")[-1] == "log" and all(
        r["log"] in (tmp_path / "slurm/summary.csv").read_text() for r in slurm.rows
    )


def _final_state(job_id: str, timeout_s: float = 60.0) -> str:
    """The job's state in the accounting once it has ended (a task's result is back a moment
    before SLURM records the job COMPLETED)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = _sacct(job_id)[0]["state"]
        if state not in ("PENDING", "RUNNING", "COMPLETING") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def _running_task(array_id: str, timeout_s: float = 120.0) -> str:
    """The first task of the array that SLURM shows RUNNING."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-j", array_id, "-t", "RUNNING", "-o", "%i"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if out:
            return out[0]
        time.sleep(0.2)
    raise AssertionError(f"no task of array {array_id} ran within {timeout_s} s")


def test_scancel_fails_a_job_with_its_reason_and_retry_failed_completes_it(
    run_dir, tmp_path, capsys
):
    """--no-wait submits and returns; a task is cancelled while it runs; the re-run waits for the
    jobs already submitted (no new submission), reports the cancelled one failed in one line,
    and --retry-failed runs that one alone again; a last re-run submits nothing."""
    spec, out = run_dir / "grid.toml", tmp_path / "sweep"
    jobs = expand(read_spec(spec), base=run_dir)
    argv = ["sweep", str(spec), "--out", str(out), "--executor", "slurm", "--cpus", "1",
            "--mem-gb", "1", "--time-min", "10", "--array-parallelism", "2", "--quiet"]  # fmt: skip
    assert main([*argv, "--no-wait"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert sum(ln.startswith("submitted ") for ln in table) == 6, table
    array_id = _array_of(out, jobs)
    first = {j.id: read_submission(out, j.id)["cluster_job_id"] for j in jobs}
    task = _running_task(array_id)
    subprocess.run(["scancel", task], check=True)
    with capsys.disabled():
        print("scancel", task)
    cancelled = next(j.id for j in jobs if first[j.id] == task)
    assert main(argv) == 1  # one job has no result: the exit code says so
    table = capsys.readouterr().out
    line = next(ln for ln in table.splitlines() if cancelled in ln)
    with capsys.disabled():
        print(line)
    assert line.startswith("failed") and "CANCELLED" in line and "log:" in line
    assert {j.id: read_submission(out, j.id)["cluster_job_id"] for j in jobs} == first
    states = {r["job"]: r["state"] for r in _sacct(array_id)}
    assert states[task].startswith("CANCELLED")
    assert sum(s == "COMPLETED" for s in states.values()) == 5
    assert main(argv) == 1  # without --retry-failed the failure stands
    assert "--retry-failed runs it again" in capsys.readouterr().out
    assert main([*argv, "--retry-failed"]) == 0
    table = capsys.readouterr().out
    with capsys.disabled():
        print(table)
    assert "done      " + cancelled in table
    assert sum(ln.startswith("skipped ") for ln in table.splitlines()) == 5
    again = read_submission(out, cancelled)["cluster_job_id"]
    assert again != task and _final_state(again.split("_")[0]) == "COMPLETED"
    assert main(argv) == 0
    assert sum(ln.startswith("skipped ") for ln in capsys.readouterr().out.splitlines()) == 6
    assert read_submission(out, cancelled)["cluster_job_id"] == again  # nothing resubmitted
