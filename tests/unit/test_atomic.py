"""Atomic writes: all or nothing, with normal file permissions."""

from __future__ import annotations

import os

import pytest

from circuits.core.atomic import atomic_path, prepare_out_dir, write_json
from circuits.core.errors import UsageError
from circuits.core.manifest import write_manifest
from circuits.core.outputs import output_dir


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


def test_an_output_folder_appears_whole_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError):
        with output_dir(tmp_path / "new") as out:
            (out / "partial.json").write_text("{")
            raise RuntimeError("compute failed")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling
    with output_dir(tmp_path / "new") as out:
        assert out.name.startswith(".new.partial-") and not (tmp_path / "new").exists()
        (out / "a.json").write_text("{}")
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["a.json"]


def test_an_existing_folder_is_refused_or_replaced_whole(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("earlier result")
    write_manifest(tmp_path / "old")  # a folder p0-circuits wrote
    with pytest.raises(UsageError, match="--overwrite"):
        with output_dir(tmp_path / "old"):
            pass
    with pytest.raises(RuntimeError):
        with output_dir(tmp_path / "old", overwrite=True):
            raise RuntimeError("compute failed")
    assert (tmp_path / "old" / "keep.txt").read_text() == "earlier result"  # untouched
    with output_dir(tmp_path / "old", overwrite=True) as out:
        (out / "new.txt").write_text("new")
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["new.txt"]  # never mixed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_run(tmp_path):
    stale = tmp_path / ".out.partial-999999999"  # no such process
    stale.mkdir()
    (stale / "half.json").write_text("{")
    with output_dir(tmp_path / "out") as out:
        (out / "a").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
