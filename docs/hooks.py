"""MkDocs hooks of the documentation site (``mkdocs.yml``; run by ``docs/build_site.py``).

* **API reference**: one page per package, generated at build time from the package's lazy
  export map (``circuits/<pkg>/__init__.py``), so every public name has an entry (its
  docstring, via mkdocstrings) and a new export cannot be missing from the site.
* **Notebooks**: ``docs/notebooks/`` holds the executed copies of ``notebooks/*.ipynb``
  (``docs/build_site.py`` puts them there; git ignores them); mkdocs-jupyter renders them with
  their outputs. A notebook without its copy fails the build.
* **Repository files**: a page links to ``../results/...`` or ``../notebooks/...`` as it does
  on a code host; those files are added to the site and the links rewritten to them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {  # page -> (title, packages whose exports it documents)
    "reference/circuits.md": ("circuits", ["circuits"]),
    "reference/patching.md": ("circuits.patching", ["circuits.patching"]),
    "reference/circuit.md": ("circuits.circuit", ["circuits.circuit"]),
    "reference/metrics.md": ("circuits.metrics", ["circuits.metrics"]),
    "reference/panel.md": ("circuits.panel", ["circuits.panel"]),
    "reference/sweep.md": ("circuits.sweep", ["circuits.sweep"]),
    "reference/emergence.md": ("circuits.emergence", ["circuits.emergence"]),
    "reference/viz.md": ("circuits.viz", ["circuits.viz"]),
    "reference/zoo.md": ("circuits.zoo and prompts", ["circuits.zoo", "circuits.prompts"]),
}
REPO_LINK = re.compile(r"\]\(\.\./((?:results|notebooks)/[^)#\s]+)")


def exports(package: str) -> dict[str, str]:
    """``name -> defining module`` of ``package``'s public names, read from its source."""
    path = ROOT / package.replace(".", "/")
    init = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(init.read_text(encoding="utf-8"))
    if not path.is_dir():  # a plain module: its public top-level functions and classes
        return {
            n.name: package
            for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.ClassDef) and not n.name.startswith("_")
        }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Dict)
            and node.keys
            and all(isinstance(k, ast.Constant) for k in node.keys)
        ):
            pairs = zip(node.keys, node.values, strict=True)
            return {k.value: f"{package}.{v.value}" for k, v in pairs}  # type: ignore[union-attr]
    return {}


def reference_page(title: str, packages: list[str]) -> str:
    lines = [f"# {title}\n", "Generated from the docstrings of every public name.\n"]
    for package in packages:
        for name, module in sorted(exports(package).items(), key=lambda kv: kv[0].lower()):
            lines.append(f"::: {module}.{name}\n")
    return "\n".join(lines)


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns notebooks into pages
def on_files(files: Files, config) -> Files:
    for uri, (title, packages) in REFERENCE.items():
        files.append(File.generated(config, uri, content=reference_page(title, packages)))
    missing = [
        p.name
        for p in (ROOT / "notebooks").glob("*.ipynb")
        if files.get_file_from_path(f"notebooks/{p.name}") is None
    ]
    if missing:
        raise FileNotFoundError(
            f"docs/notebooks/ lacks {missing}: build with docs/build_site.py, which executes them"
        )
    linked = set()
    for page in Path(config["docs_dir"]).glob("*.md"):
        linked |= set(REPO_LINK.findall(page.read_text(encoding="utf-8")))
    for rel in sorted(linked):
        if rel.startswith("results/"):
            if not (ROOT / rel).is_file():
                raise FileNotFoundError(f"a page links to {rel}, which does not exist")
            files.append(File.generated(config, rel, abs_src_path=str(ROOT / rel)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """``../results/x`` and ``../notebooks/x`` (right on a code host) -> the site's copies."""
    return REPO_LINK.sub(lambda m: "](" + m.group(1), markdown)
