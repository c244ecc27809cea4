"""Atomic writes never leave partial results and never replace data unasked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emae.errors import EmaeError
from emae.io.atomic import atomic_dir, atomic_file, check_writable


def test_atomic_file_appears_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_file(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def test_existing_file_is_not_replaced_without_overwrite(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("user data")
    with pytest.raises(EmaeError, match="already exists"), atomic_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "user data"
    with atomic_file(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_dir_keeps_old_content_when_interrupted(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_empty_existing_folder_may_be_filled(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_writable(tmp_path / "empty") == tmp_path / "empty"


def test_missing_parent_is_named(tmp_path):
    with pytest.raises(EmaeError, match="does not exist"):
        check_writable(tmp_path / "nope" / "a.txt")


def test_overwrite_never_replaces_foreign_data(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "raw.tif").write_text("user data")

    def is_run(path):
        return (path / "config.json").is_file()

    with pytest.raises(EmaeError, match="exists and is not a model folder; refusing"):
        with atomic_dir(target, overwrite=True, replaceable=is_run, kind="a model folder") as tmp:
            (tmp / "config.json").write_text("{}")
    assert [p.name for p in target.iterdir()] == ["raw.tif"]
    (target / "config.json").write_text("{}")
    with atomic_dir(target, overwrite=True, replaceable=is_run, kind="a model folder") as tmp:
        (tmp / "config.json").write_text("new")
    assert (target / "config.json").read_text() == "new"


def test_check_writable_refuses_a_folder_it_cannot_write(tmp_path):
    """A read-only location is a one-line error before anything is written, also for root
    (which ignores permission bits): /proc accepts no new files."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        targets = [Path("/proc") / "emae-out.zarr"]
        if os.geteuid() != 0:
            targets.append(locked / "out.zarr")
        for target in targets:
            with pytest.raises(EmaeError, match="is not writable") as info:
                check_writable(target)
            assert "\n" not in str(info.value)
            assert not target.exists()
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []
