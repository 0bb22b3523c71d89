"""A sweep's spec is checked whole before any job runs, without loading a model."""

from __future__ import annotations

import json
import re

import pytest

from circuits.core.errors import UsageError
from circuits.sweep.spec import expand, read_spec


@pytest.fixture()
def run(tmp_path):
    """A training-run folder as the spec checks see it (run.json and checkpoint files)."""
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    for step in (0, 10, 20):
        (folder / "checkpoints" / f"step_{step:07d}.pt").write_bytes(b"")
    return folder


def _write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_grid_is_the_product_of_the_axes(run, tmp_path):
    spec = _write(
        tmp_path,
        'commands = ["discover", "measure"]\nmodels = ["run"]\ncheckpoints = "all"\n'
        'counterfactuals = ["shift", "token:<bos>"]\n[[prompts]]\nn_tokens = 12\n'
        "[[prompts]]\nn_tokens = 16\nmax_tokens = 16\n[discover]\nfirst_receiver = 1\n",
    )
    jobs = expand(read_spec(spec), base=tmp_path)
    # discover: 3 checkpoints x 2 counterfactuals x 2 prompt settings; measure: 3 x 2
    assert len(jobs) == 12 + 6
    assert len({j.id for j in jobs}) == len(jobs)
    first = jobs[0]
    assert first.argv[:5] == ("discover", "--model", f"{run}@0", "--counterfactual", "shift")
    assert "--first-receiver" in first.argv and "--n-tokens" in first.argv
    measure = [j for j in jobs if j.command == "measure"]
    assert all("--first-receiver" not in j.argv and "--n-tokens" not in j.argv for j in measure)
    assert {
        j.argv[j.argv.index("--max-tokens") + 1] for j in measure if "--max-tokens" in j.argv
    } == {"16"}
    # the same spec read again gives the same ids (a re-run finds its jobs)
    assert [j.id for j in expand(read_spec(spec), base=tmp_path)] == [j.id for j in jobs]
    # JSON specs work the same
    same = _write(tmp_path, json.dumps(read_spec(spec).model_dump()), "s.json")
    assert [j.id for j in expand(read_spec(same), base=tmp_path)] == [j.id for j in jobs]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('commands = ["train"]\nmodels = ["run"]\n', r"commands\.0"),
        ('commands = ["discover"]\nmodels = []\n', r"models"),
        ('commands = ["discover"]\nmodels = ["run"]\nmodel = "x"\n', r"model: Extra inputs"),
        ('commands = ["discover"]\nmodels = ["run"]\n[args]\nout = "x"\n', r"set by the sweep"),
        ('commands = ["discover"]\nmodels = ["run"]\n[[prompts]]\nn_tokens = 0\n', r"n_tokens"),
        ('commands = ["discover"]\nmodels = ["run"\n', r"not valid toml"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_key(run, tmp_path, text, message):
    with pytest.raises(UsageError, match=message) as err:
        read_spec(_write(tmp_path, text))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('commands = ["discover"]\nmodels = ["no-such-model"]\n', r"unknown model 'no-such-model'"),
        (
            'commands = ["discover"]\nmodels = ["run"]\ncheckpoints = [10, 15]\n',
            r"no checkpoint at steps \[15\]",
        ),
        (
            'commands = ["measure"]\nmodels = ["run"]\n[args]\nfirst_receiver = 1\n',
            r"not a valid command line",
        ),
        (
            'commands = ["discover"]\nmodels = ["run"]\ncounterfactuals = ["sideways"]\n',
            r"not a valid command line",
        ),
    ],
)
def test_a_grid_that_cannot_run_is_refused_before_any_job(run, tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        expand(read_spec(_write(tmp_path, text)), base=tmp_path)
    assert not (tmp_path / "jobs").exists()


# ------------------------------------------------------------------------------------------------
# A sweep refuses, before any job and before creating anything, every spec one of its commands
# would refuse (the commands' own pre-load checks), and its exit code says whether every job has
# a result.
# ------------------------------------------------------------------------------------------------

TINY_SPEC = 'commands = ["measure", "discover"]\nmodels = ["tiny"]\n'
"""A grid on the built-in ``tiny`` model (no file needed)."""


def _sweep(tmp_path, spec, capsys, out="out") -> tuple[int, list[str]]:
    from circuits.cli import main

    capsys.readouterr()
    code = main(["sweep", str(spec), "--out", str(tmp_path / out), "--quiet"])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TINY_SPEC + "[discover]\nthreshold = nan\n", r"discover\.threshold = nan"),
        (TINY_SPEC + "[args]\nthreshold = nan\n", r"args\.threshold = nan"),
        (TINY_SPEC + "[measure]\nmassive_ratio = inf\n", r"measure\.massive_ratio = inf"),
        (TINY_SPEC + "[args]\nseed = -5\n", r"--seed must be at least 0"),
        (TINY_SPEC + "[discover]\nthreshold = 2.0\n", r"component_threshold"),
        (TINY_SPEC + "[measure]\neps = 1.5\n", r"--eps must lie in"),
        (TINY_SPEC + '[discover]\nreceivers = "a"\n', r"--receivers takes layers"),
        (TINY_SPEC + '[args]\ndevice = "gpu"\n', r"--device must be"),
        (TINY_SPEC + '[[prompts]]\ntext = "missing.txt"\n', r"text file .*missing.txt"),
        ('commands = ["discover"]\nmodels = ["run"]\ncheckpoints = []\n', r"checkpoints"),
    ],
)
def test_a_spec_a_command_would_refuse_is_refused_before_anything(
    run, tmp_path, capsys, text, message
):
    code, err = _sweep(tmp_path, _write(tmp_path, text), capsys)
    assert code == 2
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "out").exists()


def test_a_spec_that_is_not_utf8_is_one_line(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_bytes(TINY_SPEC.encode() + b'[args]\ndevice = "\xff\xfe"\n')
    code, err = _sweep(tmp_path, spec, capsys)
    assert code == 2 and len(err) == 1 and "not UTF-8" in err[0], err
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused_with_the_fix(tmp_path, capsys):
    (tmp_path / "out").write_text("mine")
    code, err = _sweep(tmp_path, _write(tmp_path, TINY_SPEC), capsys)
    assert code == 2 and len(err) == 1 and "is a file" in err[0] and "choose" in err[0], err
    assert (tmp_path / "out").read_text() == "mine"


def test_jobs_busy_in_another_sweep_leave_the_sweep_unfinished(tmp_path, capsys):
    from filelock import FileLock

    from circuits.sweep.jobs import job_paths

    spec = _write(tmp_path, 'commands = ["measure"]\nmodels = ["tiny"]\n')
    jobs = expand(read_spec(spec), base=tmp_path)
    locks = [FileLock(str(job_paths(tmp_path / "out", j.id)[2])) for j in jobs]
    (tmp_path / "out" / "jobs").mkdir(parents=True)
    for lock in locks:  # another sweep holds every job
        lock.acquire()
    try:
        code, _ = _sweep(tmp_path, spec, capsys)
    finally:
        for lock in locks:
            lock.release()
    assert code == 1
    summary = (tmp_path / "out" / "summary.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in summary] == ["not run"] * len(jobs)
    assert (tmp_path / "out" / "sweep.json").is_file()


def test_the_unfinished_line_names_busy_and_failed_jobs():
    from circuits.sweep.run import SweepOutcome

    job = {"id": "j"}
    busy = SweepOutcome([{"status": "busy", "job": job}, {"status": "done", "job": job}], [], [])
    line = busy.unfinished()
    assert line is not None and "\n" not in line
    assert "1 of 2 jobs have no result" in line and "busy in another sweep" in line
    failed = SweepOutcome([{"status": "failed", "job": job}], [], [])
    assert "--retry-failed" in (failed.unfinished() or "")
    assert SweepOutcome([{"status": "done", "job": job}], [], []).unfinished() is None


def test_a_summary_is_never_written_without_its_spec(tmp_path):
    from circuits.sweep.summary import SPEC_COPY, SUMMARY_JSONL, write_summary

    row = {"id": "j", "command": "measure", "status": "not run"}
    with pytest.raises(ValueError):
        write_summary(tmp_path, [row], {"args": {"threshold": float("nan")}})
    assert not (tmp_path / SUMMARY_JSONL).exists() and not (tmp_path / SPEC_COPY).exists()
    files = write_summary(tmp_path, [row], {"args": {}})
    assert files[0].name == SPEC_COPY and (tmp_path / SUMMARY_JSONL).is_file()
