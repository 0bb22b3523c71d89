"""Result records: reading the JSON the commands write, and recognising a result directory.

Three kinds of result directory exist (:func:`result_kind`):

* ``measure``: holds ``sink_metrics.json`` (``p0-circuits measure``);
* ``discover``: holds ``patching.json`` and ``circuit.json`` (``p0-circuits discover``);
* ``compare``: holds no record itself but sub-directories that hold ``sink_metrics.json``
  (e.g. ``bos/`` and ``no-bos/``), shown side by side.

Every record carries its ``format`` (``RECORD_FORMATS``) and every result folder a
``manifest.json`` of checksums written with it: a record of another kind or version, or one
changed after it was written, is refused with a one-line error before anything reads it. So is a
record whose top-level keys are not its kind's (``RECORD_KEYS``): a key missing, or one no
version writes (a misspelt ``faithfulnes``), is named, never read as "no value".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection
from difflib import get_close_matches
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

_MEASURED = (  # circuits.metrics.measure.SinkReport.to_dict: the measurement itself
    "n_tokens",
    "batch_size",
    "bos",
    "eps",
    "sink_rate_all_layers",
    "sink_rate_from_layer2",
    "first_layer_norm_ratio_over_10",
    "p0_norm_growth_first_two_blocks",
    "norm_growth_share_l01",
    "largest_norm_jump_layer",
    "embed",
    "layers",
    "recognition",
    "massive_ratio_threshold",
    "massive_activations",
)
_MEASURE_HEADER = (  # what the command (or a caller in Python) says about the measurement
    "model",
    "command",
    "args",
    "seed",
    "versions",
    "command_line",
    "model_source",
    "model_description",
    "dtype",
    "n_tokens_in_text",
    "truncated",
    "tokens",
    "token_ids",
)
_MEASURED_WHEN = ("routing",)  # a mixture-of-experts model's P0 routing (circuits.metrics.routing)
_VIEWS = ("model", "bos", "n_tokens", "tokens", "token_ids", "heads", "patterns", "norm_labels")

RECORD_KEYS: dict[str, tuple[tuple[str, ...], frozenset[str] | None]] = {
    "measure": (
        ("format", *_MEASURED),
        frozenset(("format", *_MEASURED, *_MEASURED_WHEN, *_MEASURE_HEADER)),
    ),
    # every other key of patching.json is typed, unknown ones refused, by
    # circuits.circuit.record.DiscoveryRecord (a layer above this one)
    "discover": (
        (
            "format",
            "model",
            "counterfactual",
            "metric",
            "receiver_layers",
            "tokens",
            "clean",
            "components",
            "circuit",
            "faithfulness",
            "verdict",
        ),
        None,
    ),
    "views": (("format", *_VIEWS, "norms"), frozenset(("format", *_VIEWS, "norms"))),
    "run": (
        ("format", "config", "vocab_size"),
        frozenset(("format", "config", "vocab_size", "bos_token_id", "data_id", "provenance")),
    ),
}
"""Per record kind: (the top-level keys every record holds, every key it may hold; None: checked
by its typed model)."""


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
    """A record of ``kind`` (``RECORD_FORMATS``), refused when its format is another's or its
    top-level keys are not the kind's (``RECORD_KEYS``, ``check_keys``)."""
    data = read_json(path)
    expected = RECORD_FORMATS[kind]
    found = data.get("format")
    if found != expected:
        raise UsageError(
            f"{path} is not a {kind} record of this version (format {found!r}, expected "
            f"{expected!r}); rerun the command that wrote it"
        )
    if kind in RECORD_KEYS:
        check_keys(path, data, *RECORD_KEYS[kind])
    return data


def check_keys(
    source: str | os.PathLike,
    data: dict[str, Any],
    required: Collection[str],
    allowed: Collection[str] | None = None,
) -> None:
    """A one-line ``UsageError`` naming every key of ``required`` that ``data`` lacks and every
    key of ``data`` outside ``allowed`` (None: any), each with the key it is a likely misspelling
    of."""
    known = set(required) | set(allowed or ())
    unknown = [] if allowed is None else [k for k in data if k not in known]
    strays = [k for k in data if k not in known]
    problems = [f"unknown key {k!r}{_likely(k, known, 'a misspelling of')}" for k in unknown]
    problems += [
        f"missing key {k!r}{_likely(k, strays, 'misspelt as')}" for k in required if k not in data
    ]
    if problems:
        raise UsageError(
            f"{source}: {'; '.join(problems)}; fix the key, or rerun the command that wrote it"
        )


def _likely(key: str, candidates: Collection[str], relation: str) -> str:
    close = get_close_matches(str(key), [str(c) for c in candidates], n=1, cutoff=0.75)
    return f" ({relation} {close[0]!r}?)" if close else ""


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
