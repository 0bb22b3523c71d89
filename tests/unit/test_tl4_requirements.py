"""``requirements/transformer-lens-4.txt`` (docs/tl4.md) must stay what it says:
``pyproject.toml``'s dependencies and test extra, with TransformerLens 4 instead of 3.x."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

ROOT = Path(__file__).resolve().parents[2]


def _requirements() -> list[str]:
    lines = (ROOT / "requirements" / "transformer-lens-4.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_tl4_requirements_are_pyprojects_but_for_transformer_lens():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    got = _requirements()
    tl3 = [r for r in expected if r.startswith("transformer-lens")]
    tl4 = [r for r in got if r.startswith("transformer-lens")]
    assert tl3 == ["transformer-lens>=3.9,<4"] and tl4 == ["transformer-lens>=4.3,<5"]

    def strip(rs):
        return sorted(r.replace(" ", "") for r in rs if not r.startswith("transformer-lens"))

    assert strip(got) == strip(expected)
