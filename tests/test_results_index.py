"""results/README.md lists every committed result directory with the command that made it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuits.report import command_line

RESULTS = Path(__file__).resolve().parent.parent / "results"
RESULT_FILES = {"sink_metrics.json": "measure", "patching.json": "discover"}


def _result_dirs() -> list[tuple[Path, str]]:
    found = []
    for name, command in RESULT_FILES.items():
        found += [(p.parent, command) for p in RESULTS.rglob(name)]
    return sorted(found)


@pytest.mark.skipif(not RESULTS.is_dir(), reason="no results/ directory")
def test_every_result_is_indexed_with_its_command():
    index = (RESULTS / "README.md").read_text()
    dirs = _result_dirs()
    assert dirs, "results/ holds no result"
    for path, command in dirs:
        rel = path.relative_to(RESULTS).as_posix()
        assert f"`{rel}/`" in index, f"results/README.md does not list {rel}/"
        data = json.loads(
            next(
                path / f for f, c in RESULT_FILES.items() if c == command and (path / f).exists()
            ).read_text()
        )
        args = data.get("args") or (data.get("provenance") or {}).get("args")
        line = command_line(command, args)
        assert line in index, f"results/README.md does not give the command of {rel}/: {line}"
