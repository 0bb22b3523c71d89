"""Result records: reading the JSON the commands write, and recognising a result directory.

Three kinds of result directory exist (:func:`result_kind`):

* ``measure``: holds ``sink_metrics.json`` (``p0-circuits measure``);
* ``discover``: holds ``patching.json`` and ``circuit.json`` (``p0-circuits discover``);
* ``compare``: holds no record itself but sub-directories that hold ``sink_metrics.json``
  (e.g. ``bos/`` and ``no-bos/``), shown side by side.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from circuits.core.conventions import CIRCUIT_GRAPHML, CIRCUIT_JSON, MEASURE_FILE, PATCHING_FILE
from circuits.core.errors import UsageError


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
    if any((path / f).is_file() for f in (PATCHING_FILE, CIRCUIT_JSON, CIRCUIT_GRAPHML)):
        return "discover"
    if (path / MEASURE_FILE).is_file():
        return "measure"
    if measure_subdirs(path):
        return "compare"
    raise UsageError(
        f"{path} holds no recognised result ({MEASURE_FILE}, {PATCHING_FILE} or {CIRCUIT_JSON}, "
        f"nor sub-directories with {MEASURE_FILE}); run p0-circuits measure or discover first"
    )


def load_measure(path: str | os.PathLike) -> dict[str, Any]:
    """The measure record of a directory, checked to hold per-layer numbers."""
    path = Path(path)
    data = read_json(path / MEASURE_FILE)
    if not isinstance(data.get("layers"), list) or not data["layers"]:
        raise UsageError(
            f"{path / MEASURE_FILE} has no per-layer numbers (layers); rerun p0-circuits measure"
        )
    return data
