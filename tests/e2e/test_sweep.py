"""``p0-circuits sweep``: a grid of real jobs through the local executor and submitit's local
executor, compared job for job with each command run alone; a killed sweep resumed; a bad job
failing alone; two sweeps on one folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from circuits.cli import main
from circuits.sweep.jobs import BUSY, job_paths, run_job
from circuits.sweep.run import run_sweep
from circuits.sweep.spec import expand, read_spec
from tests._sweep_helpers import train_sweep_run, write_grid_spec

IGNORED = {"timings_s", "provenance", "command_line"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 2-layer Bigram-Backcopy run with BOS and checkpoints at steps 0, 1, 5, 30."""
    return train_sweep_run(tmp_path_factory.mktemp("sweep"))


def _numbers(folder: Path) -> dict:
    data = json.loads((folder / "patching.json").read_text())
    return {k: v for k, v in data.items() if k not in IGNORED}


def test_sweep_equals_each_command_alone_on_both_executors(run_dir, tmp_path):
    spec = write_grid_spec(run_dir, "grid.toml")
    jobs = expand(read_spec(spec), base=run_dir)
    assert len(jobs) == 6
    local = run_sweep(spec, tmp_path / "local", progress=False)
    assert [r["status"] for r in local.results] == ["done"] * 6
    sub = run_sweep(spec, tmp_path / "submitit", executor="submitit-local", progress=False)
    assert [r["status"] for r in sub.results] == ["done"] * 6
    for job in jobs:
        alone = tmp_path / "alone" / job.id
        assert main([*job.argv, "--out", str(alone), "--quiet"]) == 0
        want = _numbers(alone)
        for root in ("local", "submitit"):
            got = _numbers(job_paths(tmp_path / root, job.id)[0])
            assert got == want, (root, job.id)
    # the summary: one row per job with its headline numbers, and a page with the figure
    rows = [
        json.loads(line) for line in (tmp_path / "local/summary.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in rows] == [j.id for j in jobs]
    for row, job in zip(rows, jobs, strict=True):
        record = json.loads(
            (job_paths(tmp_path / "local", job.id)[0] / "patching.json").read_text()
        )
        assert row["sink"] == pytest.approx(record["clean"]["sink"])
        assert row["circuit"] == record["circuit"]
        assert row["kept"] == pytest.approx(record["faithfulness"]["kept"])
        assert row["wall_s"] > 0 and row["peak_rss_mb"] > 50
    # the files docs/outputs.md's table lists for sweep
    top = {p.name for p in (tmp_path / "local").iterdir()}
    assert top == {"jobs", "summary.jsonl", "summary.csv", "sweep.json", "report.html"}
    assert "submitit" in {p.name for p in (tmp_path / "submitit").iterdir()}
    page = (tmp_path / "local/report.html").read_text()
    assert "data:image/svg+xml" in page and "p0-circuits sweep SPEC" in page
    assert (tmp_path / "local/summary.csv").read_text().count("\n") == 7


def test_a_bad_job_fails_alone_with_its_reason_and_is_retried_only_when_asked(run_dir, tmp_path):
    # a second prompt setting longer than the model's 16-token context: those jobs fail
    spec = write_grid_spec(
        run_dir, "bad.toml", '[[prompts]]\nn_prompts = 2\nn_tokens = 40\ntext = "ids.txt"\n'
    )
    spec.write_text(spec.read_text().replace("checkpoints = [1, 5, 30]", "checkpoints = [30]"))
    first = run_sweep(spec, tmp_path / "out", progress=False)
    statuses = {
        r["job"]["prompts"]["n_tokens"]: r
        for r in first.results
        if r["job"]["counterfactual"] == "shift"
    }
    assert statuses[12]["status"] == "done"
    assert statuses[40]["status"] == "failed" and "context" in statuses[40]["reason"]
    assert "\n" not in statuses[40]["reason"]
    assert not job_paths(tmp_path / "out", statuses[40]["job"]["id"])[0].exists()
    assert "failed" in first.table() and statuses[40]["reason"] in first.table()
    again = run_sweep(spec, tmp_path / "out", progress=False)
    assert {r["status"] for r in again.results} == {"skipped"}
    retried = run_sweep(spec, tmp_path / "out", retry_failed=True, progress=False)
    assert sorted(r["status"] for r in retried.results) == [
        "failed",
        "failed",
        "skipped",
        "skipped",
    ]
    # the CLI says so in its exit code and its table
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 1


def test_a_killed_sweep_resumes_without_redoing_complete_jobs(run_dir, tmp_path):
    spec = write_grid_spec(run_dir, "kill.toml")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "circuits", "sweep", str(spec), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jobs = [j.describe() for j in expand(read_spec(spec), base=run_dir)]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = [j for j in jobs if (job_paths(out, j["id"])[0] / "manifest.json").exists()]
        if len(done) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(done) < len(jobs), len(done)
    manifest = "manifest.json"
    stamps = {j["id"]: (job_paths(out, j["id"])[0] / manifest).stat().st_mtime_ns for j in done}
    resumed = run_sweep(spec, out, progress=False)
    by_id = {r["job"]["id"]: r["status"] for r in resumed.results}
    for j in jobs:
        want = "skipped" if j in done else "done"
        assert by_id[j["id"]] == want, j["id"]
    for job_id, stamp in stamps.items():  # complete jobs untouched
        assert (job_paths(out, job_id)[0] / manifest).stat().st_mtime_ns == stamp
    assert not list((out / "jobs").glob(".*partial*"))


def test_a_job_another_sweep_is_running_is_left_to_it(run_dir, tmp_path):
    job = expand(read_spec(write_grid_spec(run_dir, "busy.toml")), base=run_dir)[0].describe()
    out, status_file, lock_file = job_paths(tmp_path, job["id"])
    out.parent.mkdir(parents=True)
    with FileLock(str(lock_file)):
        result = run_job(job, str(tmp_path))
    assert result["status"] == BUSY and not out.exists() and not status_file.exists()
