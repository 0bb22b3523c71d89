"""The documentation site: built strict and offline, every page opens from disk with nothing
fetched from the network, the notebooks are shown with their figures, every public name has an
API entry, and a broken link fails the build.

The notebooks' executed copies come from ``tests/e2e/test_notebooks.py`` (it saves them in
``build/notebooks``), so CI runs each notebook once; run alone, the build executes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_report_browser import PROBE, _attr, _chromium

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ("file://", "data:", "blob:", "about:")

pytest.importorskip(
    "mkdocs", reason="the docs tools are in the test extra (pip install -e '.[test]')"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build_site.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"site built in {time.perf_counter() - start:.1f} s")
    return out


def _open(binary: str, site: Path, name: str, tmp: Path) -> str:
    """Open ``name`` of a copy of ``site`` (probe injected) in headless Chromium, offline."""
    copy = tmp / "site"
    if not copy.exists():
        shutil.copytree(site, copy)
    page = copy / name
    text = page.read_text(encoding="utf-8")
    if PROBE not in text:
        page.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    dom, requests, console = _chromium(binary, page.as_uri(), tmp / "dom" / name, "--dump-dom")
    remote = [r for r in requests if not r.startswith(LOCAL)]
    assert remote == [], f"{name} made network requests: {remote}"
    resources = json.loads(_attr(dom, "data-resources"))
    assert [r for r in resources if not r.startswith(LOCAL)] == [], resources
    assert json.loads(_attr(dom, "data-errors")) == [], f"{name}: script or load errors"
    assert int(_attr(dom, "data-imgs-ok")) == int(_attr(dom, "data-imgs")), f"{name}: broken image"
    return dom


def test_every_page_opens_offline_and_says_what_it_is(site, chromium, tmp_path):
    nav = ["index.html", "discover.html", "accounts.html", "reference/patching.html"]
    nav += [f"notebooks/{p.stem}.html" for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    for name in nav:
        assert (site / name).is_file(), name
        dom = _open(chromium, site, name, tmp_path)
        assert "<h1" in dom
    shot = tmp_path / "start.png"
    _chromium(chromium, (site / "index.html").as_uri(), tmp_path / "shot", f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000


def test_notebooks_are_rendered_with_their_figures(site):
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (site / "notebooks" / f"{source.stem}.html").read_text(encoding="utf-8")
        assert "data:image/png;base64," in html, f"{source.stem}: no figure on its page"
        assert "Traceback" not in html  # mkdocs-jupyter's mermaid loader names a CDN but
        # fetches only for a mermaid diagram (none here): the pages are opened offline below


def test_every_public_name_has_an_api_entry(site):
    sys.path.insert(0, str(ROOT / "docs"))
    from hooks import REFERENCE, exports

    for uri, (_, packages) in REFERENCE.items():
        html = (site / uri.replace(".md", ".html")).read_text(encoding="utf-8")
        for package in packages:
            for name, module in exports(package).items():
                assert f'id="{module}.{name}"' in html, f"{module}.{name} missing from {uri}"
    patching = (site / "reference" / "patching.html").read_text(encoding="utf-8")
    assert "Exact activation patching" in patching  # Patcher.patch's docstring, rendered


def test_a_broken_link_fails_the_build(site, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    for name in ("mkdocs.yml", "README.md", "ARCHITECTURE.md"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "notebooks", copy / "notebooks")
    shutil.copytree(ROOT / "circuits", copy / "circuits")
    (copy / "results").symlink_to(ROOT / "results")
    page = copy / "docs" / "measure.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        cwd=copy,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    assert proc.returncode != 0
    assert re.search(r"no-such-page\.md", proc.stdout + proc.stderr)
