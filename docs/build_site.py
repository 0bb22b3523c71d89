"""Build the documentation site: ``python docs/build_site.py --out site`` (then open site/index.html).

1. The notebooks are executed (``P0_NOTEBOOK_SMALL=1``: their small setting, a few minutes on 2
   CPU cores) into ``build/notebooks/``, so the site shows every figure without anyone running
   anything. An executed copy whose source has not changed since is reused:
   ``tests/e2e/test_notebooks.py`` saves the copies it executes there, so CI runs each notebook
   once. Executing at build time, rather than committing executed notebooks, keeps the stored
   notebooks free of outputs (no stale numbers) and makes a notebook that fails fail the build.
2. ``mkdocs build --strict``: a broken link, a missing anchor or reference, or a docstring that
   does not resolve fails the build. Nothing on the pages loads from a CDN (``mkdocs.yml``: no web
   fonts, no MathJax, no require.js; ``tests/e2e/test_site.py`` checks it in headless Chromium).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "build" / "notebooks"
SOURCE_KEY = "p0_source_sha256"


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_executed(nb, source: Path, folder: Path = EXECUTED) -> Path:
    """Write an executed notebook (an ``nbformat`` node) for ``source`` into ``folder``, marked
    with the source's sha256 so that a later build knows it is current."""
    import nbformat

    folder.mkdir(parents=True, exist_ok=True)
    nb.metadata[SOURCE_KEY] = source_digest(source)
    target = folder / source.name
    tmp = target.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(target)
    return target


def is_current(source: Path, folder: Path = EXECUTED) -> bool:
    import nbformat

    copy = folder / source.name
    if not copy.is_file():
        return False
    return nbformat.read(copy, as_version=4).metadata.get(SOURCE_KEY) == source_digest(source)


def execute(source: Path, folder: Path = EXECUTED) -> Path:
    """Run ``source`` top to bottom in a Jupyter kernel (small setting) and save the copy."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["P0_NOTEBOOK_SMALL"] = "1"
    nb = nbformat.read(source, as_version=4)
    run_dir = folder / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(run_dir)}}
    )
    client.execute()  # a failing cell raises: the build fails
    return save_executed(nb, source, folder)


def page_copy(executed: Path, target: Path) -> None:
    """The executed notebook as the site shows it: without the live widgets' saved state (a
    static page has no kernel to run the panel; with the state, nbconvert would load the widget
    manager from unpkg), so each widget shows its text form and the figures stay."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    nbformat.write(nb, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the site folder to write")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if is_current(source):
            print(f"build_site: {source.name}: executed copy is current")
            continue
        print(f"build_site: executing {source.name}", flush=True)
        execute(source)
    pages = ROOT / "docs" / "notebooks"  # what mkdocs renders (git ignores it)
    shutil.rmtree(pages, ignore_errors=True)
    pages.mkdir()
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page_copy(EXECUTED / source.name, pages / source.name)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean"]
    cmd += ["--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(args.out.resolve())]
    done = subprocess.run(cmd, cwd=ROOT, env=env)
    if done.returncode == 0:
        print(f"build_site: {args.out}/index.html in {time.perf_counter() - start:.0f} s")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
