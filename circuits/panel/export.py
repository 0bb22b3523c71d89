"""Keeping what you found in the panel: the selection as ``circuit.json`` / ``circuit.graphml``.

The folder is written all or nothing (``circuits.core.outputs.output_dir``) with a
``manifest.json`` of its files' checksums, and it never replaces what the panel did not write:

* a new or empty folder is written;
* an existing folder is refused unless the caller passes ``overwrite=True``, and even then it
  is replaced only when it holds a previous panel export and nothing else (``circuit.json``,
  ``circuit.graphml``, ``manifest.json``): a folder with any other file (a ``discover`` result,
  the folder the panel was opened on, a user's notes) is refused whatever ``overwrite`` says;
* the panel's Export button never overwrites: it writes the next free ``NAME-2``, ``NAME-3``, ...
"""

from __future__ import annotations

import os
from pathlib import Path

from circuits.circuit.graph import CircuitGraph
from circuits.core.conventions import CIRCUIT_GRAPHML, CIRCUIT_JSON
from circuits.core.errors import UsageError
from circuits.core.manifest import MANIFEST, write_manifest
from circuits.core.outputs import output_dir

EXPORT_FILES = (CIRCUIT_JSON, CIRCUIT_GRAPHML)


def check_export_target(target: Path, *, overwrite: bool) -> None:
    """A ``UsageError`` (nothing written) unless ``target`` may receive a panel export."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"export folder {target} is a file; choose a folder path")
    if not target.is_dir() or not any(target.iterdir()):
        return
    foreign = sorted(p.name for p in target.iterdir() if p.name not in (*EXPORT_FILES, MANIFEST))
    if foreign:
        shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
        raise UsageError(
            f"export folder {target} holds files the panel did not write ({shown}); "
            "nothing was written: choose a new folder"
        )
    if not overwrite:
        raise UsageError(
            f"export folder {target} already holds a panel export; pass overwrite=True to "
            "replace it, or choose a new folder"
        )


def next_free(target: Path) -> Path:
    """``target`` if it does not exist or is empty, else the first free ``target-2``, ..."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return target
    k = 2
    while (free := target.with_name(f"{target.name}-{k}")).exists():
        k += 1
    return free


def write_export(graph: CircuitGraph, out_dir: str | os.PathLike, *, overwrite: bool) -> Path:
    """Write ``graph`` into ``out_dir`` (checked by ``check_export_target`` first)."""
    target = Path(out_dir)
    check_export_target(target, overwrite=overwrite)
    with output_dir(target, overwrite=True) as tmp:
        graph.write_json(tmp / CIRCUIT_JSON)
        graph.write_graphml(tmp / CIRCUIT_GRAPHML)
        write_manifest(tmp, EXPORT_FILES)
    return target
