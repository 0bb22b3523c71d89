"""The committed results: indexed in results/README.md with the command that made each, and
renderable from their JSON alone (no model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from circuits.viz.report import build_report

RESULTS = Path(__file__).resolve().parents[2] / "results"
RESULT_FILES = {
    "sink_metrics.json": "measure",
    "patching.json": "discover",
    "accounts.json": "accounts",
}
COMMITTED = RESULTS / "smollm2-135m" / "measure-T64"


def _result_dirs() -> list[tuple[Path, str]]:
    found = []
    for name in RESULT_FILES:
        found += [(p.parent, name) for p in RESULTS.rglob(name)]
    return sorted(found)


def _command_line(path: Path, name: str) -> str:
    data = json.loads((path / name).read_text())
    return (data.get("provenance") or data)["command_line"]


@pytest.mark.skipif(not RESULTS.is_dir(), reason="no results/ directory")
def test_every_result_is_indexed_with_its_command():
    index = (RESULTS / "README.md").read_text()
    dirs = _result_dirs()
    assert dirs, "results/ holds no result"
    for path, name in dirs:
        rel = path.relative_to(RESULTS).as_posix()
        assert f"`{rel}/`" in index, f"results/README.md does not list {rel}/"
        line = _command_line(path, name)
        assert line.startswith(f"p0-circuits {RESULT_FILES[name]} ")
        assert f"--out results/{rel}" in line, f"{rel}: recorded command writes elsewhere: {line}"
        assert line in index, f"results/README.md does not give the command of {rel}/: {line}"


@pytest.mark.skipif(not COMMITTED.is_dir(), reason="committed SmolLM2 result not present")
def test_committed_result_renders_without_the_model(tmp_path):
    out = tmp_path / "smol"
    shutil.copytree(COMMITTED, out)
    page = build_report(out, write_figures=False).read_text()
    m = json.loads((out / "sink_metrics.json").read_text())
    assert m["model"] in page and f"{m['layers'][3]['attn_to_p0']:.3f}" in page
    assert m["command_line"] in page
    assert {p.name for p in out.iterdir()} == {p.name for p in COMMITTED.iterdir()} | {
        "report.html"
    }


EMERGENCE = RESULTS / "emergence"
EMERGENCE_RUNS = {
    "bb_bos": {"run.json", "metrics.json", "trace.json", "trace.png"}
    | {"circuit_over_training.json", "circuit_over_training.png"},
    "bb_nobos": {"run.json", "metrics.json", "trace.json", "trace.png"},
    "bb_p0zero": {"run.json", "metrics.json", "trace.json", "trace.png"},
    "bb_bos_moe": {"run.json", "metrics.json", "trace.json", "trace.png"}
    | {"circuit_over_training.json", "circuit_over_training.png"}
    | {"routing_over_training.png", "experts_over_training.png"},
}


@pytest.mark.skipif(not EMERGENCE.is_dir(), reason="no results/emergence/")
def test_emergence_runs_are_committed_with_their_commands():
    """Each calibrated run: its files, and results/emergence/README.md giving the exact train and
    trace commands its run.json and trace.json recorded."""
    index = (EMERGENCE / "README.md").read_text()
    for name, files in EMERGENCE_RUNS.items():
        folder = EMERGENCE / name
        assert {p.name for p in folder.iterdir()} == files, name
        run = json.loads((folder / "run.json").read_text())
        trace = json.loads((folder / "trace.json").read_text())
        for line in (run["provenance"]["command_line"], trace["command_line"]):
            assert line in index, f"results/emergence/README.md does not give: {line}"
        assert trace["config"] == run["config"]
        assert len(trace["checkpoints"]) >= 20  # log-spaced, enough to see a transition
