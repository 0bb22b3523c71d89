"""Generated inputs: every training config and every flag value is either accepted and runs, or
refused with exit 2 before any file is written (hypothesis)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuits.cli import main

ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 100))


def mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy = NUMBER) -> st.SearchStrategy:
    """Valid values four times out of five, anything else otherwise: both branches are run."""
    return st.integers(0, 4).flatmap(lambda i: invalid if i == 4 else valid)


SMALL_RUN = {
    "n_layers": mostly(st.integers(1, 2), ANY),
    "d_model": mostly(st.sampled_from([8, 16]), ANY),
    "n_heads": mostly(st.sampled_from([1, 2]), ANY),
    "n_ctx": mostly(st.integers(2, 12), ANY),
    "steps": mostly(st.integers(0, 2), ANY),
    "batch_size": mostly(st.integers(0, 3), ANY),
    "lr": mostly(st.floats(-1, 1e-2), ANY),
    "weight_decay": mostly(st.floats(-0.5, 0.5), ANY),
    "betas": mostly(st.lists(st.floats(0, 1), min_size=2, max_size=2), ANY),
    "positional": mostly(st.sampled_from(["rotary", "learned", "alibi"]), ANY),
    "bos": mostly(st.booleans(), ANY),
    "task": mostly(st.fixed_dictionaries({"n_plain": st.integers(0, 20)}), ANY),
}
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@SETTINGS
@given(st.fixed_dictionaries({}, optional=SMALL_RUN))
def test_a_generated_training_config_runs_or_is_refused_before_any_file(config):
    config = {
        "data": "trigger",
        "n_checkpoints": 1,
        "save_every": 0,
        "n_ctx": 8,
        "steps": 1,
        "d_model": 8,
        "n_heads": 1,
        "n_layers": 1,
        "task": {"n_plain": 8},
        **config,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.json"
        try:
            path.write_text(json.dumps(config, allow_nan=True))
        except TypeError:
            return
        out = Path(tmp) / "run"
        code = main(["train", "--config", str(path), "--out", str(out), "--quiet"])
        assert code in (0, 2)
        if code == 2:
            assert not out.exists(), "a refused config created files"
        else:
            assert (out / "checkpoints").is_dir() and (out / "run.json").is_file()


@SETTINGS
@given(
    eps=mostly(st.floats(0.01, 0.99)),
    ratio=mostly(st.floats(1, 1e4)),
    max_tokens=mostly(st.integers(2, 40), st.integers(-3, 1)),
    seed=mostly(st.integers(0, 5), st.integers(-3, -1)),
)
def test_generated_measure_flags_run_or_are_refused_before_any_file(eps, ratio, max_tokens, seed):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        argv = [
            "measure",
            "--model",
            "tiny",
            f"--eps={eps}",
            f"--massive-ratio={ratio}",
            f"--max-tokens={max_tokens}",
            f"--seed={seed}",
            "--out",
            str(out),
            "--quiet",
        ]
        code = main(argv)
        assert code in (0, 2)
        valid = (
            0 < eps < 1 and math.isfinite(ratio) and ratio >= 1 and max_tokens >= 2 and seed >= 0
        )
        assert code == (0 if valid else 2)
        assert out.exists() == (code == 0)
        assert not list(Path(tmp).glob(".*")), "a temporary folder was left"


@SETTINGS
@given(
    threshold=mostly(st.floats(0, 0.99)),
    sufficiency=mostly(st.floats(0.01, 1)),
    top_k=mostly(st.integers(-1, 4), st.integers(-5, -2)),
    rows=mostly(st.integers(1, 8), st.integers(-1, 0)),
    first=mostly(st.just(1), st.integers(-1, 3)),
)
def test_generated_discover_flags_run_or_are_refused_before_any_file(
    threshold, sufficiency, top_k, rows, first
):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        argv = [
            "discover",
            "--model",
            "tiny",
            "--n-prompts",
            "2",
            "--n-tokens",
            "8",
            f"--threshold={threshold}",
            f"--sufficiency={sufficiency}",
            f"--exact-top-k={top_k}",
            f"--max-rows={rows}",
            f"--first-receiver={first}",
            "--max-backups",
            "0",
            "--out",
            str(out),
            "--quiet",
        ]
        code = main(argv)
        assert code in (0, 2)
        assert out.exists() == (code == 0)
        assert not list(Path(tmp).glob(".*")), "a temporary folder was left"
