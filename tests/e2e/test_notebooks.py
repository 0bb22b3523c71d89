"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel, in its small setting.

The kernel is this interpreter's (``python3`` resolved by jupyter_client, i.e. ipykernel in the
same environment); ``P0_NOTEBOOK_SMALL=1`` makes each notebook use short prompts. Notebooks are
stored with their outputs cleared (checked here), so no stale numbers are committed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs"))
from build_site import save_executed  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01_quickstart",
        "02_p0_sink_circuit",
        "03_bos_is_a_crutch",
        "04_emergence",
        "05_interactive",
        "06_mixture_of_experts",
        "07_competing_accounts",
    ]
    listing = (NOTEBOOKS[0].parents[1] / "docs" / "renderings.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in listing for name in names)  # the docs list every notebook


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stored = json.loads(path.read_text())["cells"]  # nbformat.read adds missing ids itself
    assert all("id" in cell for cell in stored), f"{path.name}: cells without ids (nbformat 4.5)"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} holds outputs"
    assert nb.cells[0].cell_type == "markdown" and "claim" in nb.cells[0].source.lower()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("P0_NOTEBOOK_SMALL", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks its inline backend
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    save_executed(nb, path)  # the documentation site shows this run (docs/build_site.py)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "IProgress not found" not in stderr  # ipywidgets present: progress bars are widgets
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    if html:  # circuitsvis views come out offline: the bundle inline, no CDN script
        page = html[0]["data"]["text/html"]
        assert "var CircuitsVis=" in page and "unpkg.com" not in page
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was drawn"
    assert os.environ["P0_NOTEBOOK_SMALL"] == "1"
