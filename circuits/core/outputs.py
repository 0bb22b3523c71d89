"""Output folders, all or nothing.

A command that makes a result folder (``measure``, ``discover``) writes everything into a hidden
temporary sibling, ``.NAME.partial-PID``, and renames it onto ``NAME`` only once every file is
written. A failure, Ctrl-C or a kill therefore never leaves a half-written ``NAME``; a kill leaves
the temporary sibling, which the next run next to it removes (its process is gone).

An existing ``NAME`` is refused unless ``overwrite``; then it is replaced whole, never mixed with
the new files. Everything is checked (``check_out``) before any model is loaded, and a refused
``--out`` creates nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from circuits.core.errors import UsageError

PARTIAL = ".partial-"
_OLD = ".replaced-"


def _existing_ancestor(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


def check_out(out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """``out`` as a path, refused (one-line ``UsageError``, nothing created) when it exists and
    ``overwrite`` is off, when it is a file, or when its folder cannot be written."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file; choose a directory path")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise UsageError(
            f"--out {path} already exists and is not empty; pass --overwrite to replace it "
            "whole, or choose a new --out"
        )
    base = _existing_ancestor(path.parent)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot write to output directory {path} ({base} is not a writable directory); "
            "choose a writable --out"
        )
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by killed runs (their process is gone)."""
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for sibling in path.parent.glob(f".{path.name}{PARTIAL}*"):
        pid = sibling.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)
            removed.append(sibling)
    return removed


@contextmanager
def output_dir(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder for the run; on success rename it onto ``out`` (replacing
    an existing ``out`` whole when ``overwrite``), on any failure remove it. ``out`` is checked
    again here (``check_out``), so a caller that skipped the early check is still safe."""
    path = check_out(out, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = path.parent / f".{path.name}{PARTIAL}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as err:
        raise UsageError(
            f"cannot write to output directory {path} ({err.strerror or err}); choose a writable --out"
        ) from None
    try:
        yield tmp
        _publish(tmp, path, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, path: Path, *, overwrite: bool) -> None:
    if path.exists():
        if not overwrite and any(path.iterdir()):
            raise UsageError(f"--out {path} appeared while the command ran; nothing was written")
        old = path.parent / f".{path.name}{_OLD}{os.getpid()}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
