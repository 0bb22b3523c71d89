"""Checksums recorded when files are written, verified before they are read back.

Two forms:

* a folder's ``manifest.json``: ``{"format", "files": {relative path: sha256}}``, for folders
  written as a whole (result folders, converted-model cache entries);
* a ``.sha256`` sidecar next to one file, for files written one at a time (training states and
  checkpoints).

A file whose bytes no longer match its recorded sha256 -- truncated, edited, bit-flipped -- is a
``ChecksumError`` naming it, before anything reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from circuits.core.atomic import write_json, write_text
from circuits.core.cache import sha256_file
from circuits.core.errors import ChecksumError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "p0-circuits-manifest/1"
SIDECAR = ".sha256"


def write_manifest(folder: str | os.PathLike, files: Iterable[str] | None = None) -> Path:
    """Record the sha256 of ``files`` (default: every file below ``folder``) in its manifest."""
    folder = Path(folder)
    if files is None:
        files = sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
        )
    entries = {name: sha256_file(folder / name) for name in files}
    return write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, "files": entries})


def read_manifest(folder: str | os.PathLike) -> dict[str, str] | None:
    """The recorded checksums of a folder, or None when it has no manifest."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ChecksumError(f"{path} is damaged; rerun the command that wrote {folder}") from None
    if data.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
        raise ChecksumError(
            f"{path} is not a p0-circuits manifest; rerun the command that wrote it"
        )
    return {str(k): str(v) for k, v in files.items()}


def verify_files(folder: str | os.PathLike, names: Iterable[str], *, what: str = "") -> None:
    """``ChecksumError`` unless each of ``names`` exists and matches the folder's manifest."""
    folder = Path(folder)
    recorded = read_manifest(folder)
    if recorded is None:
        raise ChecksumError(
            f"{folder} has no {MANIFEST}, so its files cannot be verified; rerun the command "
            f"that wrote it{what}"
        )
    for name in names:
        path = folder / name
        if name not in recorded:
            raise ChecksumError(
                f"{path} is not listed in {folder / MANIFEST}; rerun the command{what}"
            )
        if not path.is_file():
            raise ChecksumError(f"{path} is missing; rerun the command that wrote {folder}{what}")
        if sha256_file(path) != recorded[name]:
            raise ChecksumError(
                f"{path} changed after it was written (sha256 mismatch); rerun the command that "
                f"wrote it{what}"
            )


def verify_folder(folder: str | os.PathLike, *, what: str = "") -> None:
    """``ChecksumError`` unless every file the folder's manifest lists is there, unchanged."""
    recorded = read_manifest(folder)
    if recorded is None:
        raise ChecksumError(f"{folder} has no {MANIFEST}; it cannot be verified{what}")
    verify_files(folder, recorded, what=what)


def write_sidecar(path: str | os.PathLike) -> Path:
    """Write ``PATH.sha256`` holding the sha256 of ``path`` (atomically)."""
    path = Path(path)
    return write_text(path.with_name(path.name + SIDECAR), sha256_file(path) + "\n")


def sidecar_matches(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a ``.sha256`` sidecar and its bytes match it."""
    path = Path(path)
    side = path.with_name(path.name + SIDECAR)
    if not (path.is_file() and side.is_file()):
        return False
    return side.read_text().strip() == sha256_file(path)
