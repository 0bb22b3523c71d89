"""A sweep's spec is checked whole before any job runs, without loading a model."""

from __future__ import annotations

import json

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
