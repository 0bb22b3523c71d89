"""Result records: reading the JSON the commands write, and recognising a result directory.

Three kinds of result directory exist (:func:`result_kind`):

* ``measure``: holds ``sink_metrics.json`` (``p0-circuits measure``);
* ``discover``: holds ``patching.json`` and ``circuit.json`` (``p0-circuits discover``);
* ``compare``: holds no record itself but sub-directories that hold ``sink_metrics.json``
  (e.g. ``bos/`` and ``no-bos/``), shown side by side.

Every record carries its ``format`` (``RECORD_FORMATS``) and every result folder a
``manifest.json`` of checksums written with it: a record of another kind or version, or one
changed after it was written, is refused with a one-line error before anything reads it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from circuits.core.conventions import (
    CIRCUIT_GRAPHML,
    CIRCUIT_JSON,
    MEASURE_FILE,
    PATCHING_FILE,
    RECORD_FORMATS,
)
from circuits.core.errors import UsageError
from circuits.core.manifest import verify_files

RECORD_FILES = {"measure": MEASURE_FILE, "discover": PATCHING_FILE}


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, recursively (JSON has no
    NaN; a missing number must read as missing, never as a number)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from ``path``; a one-line ``UsageError`` if it is unreadable or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(
            f"{path} is not valid JSON ({err}); rerun the command that wrote it"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} does not hold a JSON object; rerun the command that wrote it")
    return data


def read_record(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """A record of ``kind`` (``RECORD_FORMATS``), refused when its format is another's."""
    data = read_json(path)
    expected = RECORD_FORMATS[kind]
    found = data.get("format")
    if found != expected:
        raise UsageError(
            f"{path} is not a {kind} record of this version (format {found!r}, expected "
            f"{expected!r}); rerun the command that wrote it"
        )
    return data


def measure_subdirs(path: Path) -> list[Path]:
    """Sub-directories of ``path`` holding a measure record, sorted by name."""
    return sorted(p for p in path.iterdir() if p.is_dir() and (p / MEASURE_FILE).is_file())


def result_kind(out_dir: str | os.PathLike) -> str:
    """``measure``, ``discover`` or ``compare``; a one-line ``UsageError`` otherwise."""
    path = Path(out_dir)
    if not path.is_dir():
        raise UsageError(
            f"{path} is not a directory; give a directory written by measure or discover"
        )
    if (path / PATCHING_FILE).is_file():
        return "discover"
    if any((path / f).is_file() for f in (CIRCUIT_JSON, CIRCUIT_GRAPHML)):
        raise UsageError(
            f"{path} holds a circuit but no {PATCHING_FILE}; rerun p0-circuits discover"
        )
    if (path / MEASURE_FILE).is_file():
        return "measure"
    if measure_subdirs(path):
        return "compare"
    raise UsageError(
        f"{path} holds no recognised result ({MEASURE_FILE}, {PATCHING_FILE} or {CIRCUIT_JSON}, "
        f"nor sub-directories with {MEASURE_FILE}); run p0-circuits measure or discover first"
    )


def load_result(path: str | os.PathLike, kind: str, *extra: str) -> dict[str, Any]:
    """The record of a ``measure`` or ``discover`` folder, after checking it (and the ``extra``
    files that will be read with it) against the folder's manifest and its format."""
    path = Path(path)
    name = RECORD_FILES[kind]
    verify_files(path, [name, *(f for f in extra if (path / f).exists())])
    data = read_record(path / name, kind)
    if kind == "measure" and (not isinstance(data.get("layers"), list) or not data["layers"]):
        raise UsageError(
            f"{path / name} has no per-layer numbers (layers); rerun p0-circuits measure"
        )
    return data


def load_measure(path: str | os.PathLike) -> dict[str, Any]:
    """The verified measure record of a directory."""
    return load_result(path, "measure")
