"""Atomic writes: readers see the old file or the new one, never a torn one, and no temp file is left; a full disk
is one error naming the folder and the room needed."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from visionops.files import (
    DiskFullError,
    atomic_write_bytes,
    disk_room,
    dump_json,
    free_bytes,
    human_bytes,
    write_json,
)


def test_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object()})
    assert target.read_text() == dump_json({"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_unwritable_folder_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*file/out.json"):
        atomic_write_bytes(blocker / "out.json", b"{}")


def test_json_is_stable() -> None:
    assert dump_json({"b": 1, "a": [1, 2]}) == dump_json({"a": [1, 2], "b": 1})


def test_atomic_write_gives_the_usual_file_mode(tmp_path: Path) -> None:
    import os

    target = tmp_path / "out.csv"
    atomic_write_bytes(target, b"a,b\n")
    (tmp_path / "plain.csv").write_bytes(b"a,b\n")  # what open() gives under this process's umask
    assert os.stat(target).st_mode & 0o777 == os.stat(tmp_path / "plain.csv").st_mode & 0o777


def test_disk_room_names_the_folder_and_the_room_needed(tmp_path: Path) -> None:
    need = 2 * free_bytes(tmp_path)
    with pytest.raises(DiskFullError, match="has too little room") as early, disk_room(tmp_path, need, "the thing"):
        pytest.fail("checked before the work")
    assert f"no space left for the thing in {tmp_path}" in str(early.value)

    entered = False  # an estimate only quoted: the work starts, a full disk inside becomes the same error
    with pytest.raises(DiskFullError) as late, disk_room(tmp_path, need, "the thing", check_first=False):
        entered = True
        raise OSError(errno.ENOSPC, "No space left on device")
    assert entered and "filled up while writing" in str(late.value)
    assert f"(needs about {human_bytes(need)}, " in str(late.value) and "run the command again" in str(late.value)
