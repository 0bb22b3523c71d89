"""Atomic writes: all or nothing, with normal file permissions."""

from __future__ import annotations

import os

import pytest

from circuits.errors import UsageError
from circuits.io import atomic_path, prepare_out_dir, write_json


def test_write_json_is_atomic_and_readable(tmp_path):
    target = write_json(tmp_path / "a.json", {"x": 1})
    assert target.read_text() == '{\n  "x": 1\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(ValueError):
        write_json(tmp_path / "a.json", {"x": float("nan")})
    assert target.read_text() == '{\n  "x": 1\n}\n'  # the old content survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_prepare_out_dir_rejects_unwritable(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="cannot write to output directory"):
        prepare_out_dir(tmp_path / "file" / "sub")
    assert prepare_out_dir(tmp_path / "new" / "dir").is_dir()
