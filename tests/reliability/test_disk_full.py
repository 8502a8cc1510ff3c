"""A full disk: training, the disk cache and a DVC push each run out of space on a small tmpfs made for the test.

What is checked: one line naming the folder (and the room needed where it is known), no partial file where a
later stage would read it, and a rerun once there is room (the tmpfs remounted larger) that completes.

Mounting needs root: elsewhere (CI runs as a user) these tests skip, saying so.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import cli, git_commit, git_init, md5s, run, tiny_project

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


class SmallDisk:
    """A tmpfs of a given size mounted at ``path``; :meth:`resize` frees space the way a user would make room."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mount(self, size: str) -> SmallDisk:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): the disk-full cases need one")
        return self

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "--lazy", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A folder of tmp_path that a test mounts as a small tmpfs (``small_disk.mount("64k")``); unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; as a user the disk-full cases are not run")
    disk = SmallDisk(tmp_path / "disk")
    disk.path.mkdir()
    try:
        yield disk
    finally:
        disk.unmount()


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The command's error, as one line (rich wraps long lines); asserts it is an error without a traceback."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return " ".join(proc.stderr[proc.stderr.index("error:") :].split())


# --- The disk cache and training -------------------------------------------------------------------------------


@pytest.mark.slow  # three runs of `visionops train`, the last one training a tiny model: minutes on 2 cores
def test_train_on_a_full_disk_says_where_and_a_rerun_completes(tmp_path: Path, small_disk: SmallDisk) -> None:
    """artifacts/ on a small disk: the disk cache does not fit (refused before any decoding, with the room needed);
    then the cache fits but the per-epoch backups do not (the disk fills up mid-run); then, with room, the rerun
    completes. No model.keras appears until the end; no temporary file stays."""
    from visionops.data.cache import cache_damage
    from visionops.interfaces import check_model_file

    params = (
        "train: {model: EfficientNetB0, image_size: 32, weights: null, batch_size: 8, head: {epochs: 1}, "
        "finetune: {epochs: 1, unfreeze_blocks: 1}}\nruntime: {cache: disk}\n"
    )
    project = tiny_project(tmp_path / "project", params)
    artifacts = small_disk.mount("32k").path / "artifacts"
    out = artifacts / "train"
    cmd = cli("train", "--out", str(out))

    cache_full = _one_error_line(run(cmd, cwd=project, check=False, timeout=900))
    print(f"cache on a 32 kB disk: {cache_full}")
    for part in (f"no space left for the disk cache (runtime.cache: disk) in {artifacts / '.cache'}", "needs about"):
        assert part in cache_full, (part, cache_full)
    assert "runtime.cache: memory" in cache_full and "run it again" in cache_full
    assert not (artifacts / ".cache").exists() or not any((artifacts / ".cache").iterdir()), "nothing half-written"

    small_disk.resize("4m")  # the cache (a few hundred kB) fits; a backup of B0's weights (≈ 16 MB) does not
    mid_run = _one_error_line(run(cmd, cwd=project, check=False, timeout=900))
    print(f"training on a 4 MB disk: {mid_run}")
    assert (
        f"no space left for training's outputs (per-epoch backups, TensorBoard logs, model.keras) in {artifacts}"
        in (mid_run)
    ), mid_run
    assert "filled up while writing" in mid_run and "resumes from its last whole per-epoch backup" in mid_run
    assert "(needs about 8" in mid_run, "B0 with 4 classes: 4.05 M values x 20 bytes = 81 MB"
    assert not (out / "model.keras").exists(), "no model.keras before the training is complete"
    print(f"left on the full disk: {sorted(str(p.relative_to(artifacts)) for p in artifacts.rglob('*'))}")
    caches = sorted((artifacts / ".cache").glob("images-*.npy"))  # train and val
    assert len(caches) == 2 and sorted((artifacts / ".cache").iterdir()) == sorted(
        [*caches, *(p.with_name(p.name + ".json") for p in caches)]
    ), "the caches (complete, with their checksums) and nothing else"
    for cache in caches:
        assert cache_damage(cache, np.load(cache, mmap_mode="r").shape) is None, "the caches that fitted are whole"

    small_disk.resize("512m")
    done = run(cmd, cwd=project, timeout=1800)
    print(f"the rerun with room: {[line for line in done.stderr.splitlines() if 'WARNING' in line]}")
    check_model_file(out / "model.keras")
    assert len((out / "history.csv").read_text().splitlines()) == 3, "header, one epoch per stage"
    temps = [p for p in artifacts.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]
    assert temps == [], temps


# --- A DVC push to a full remote ---------------------------------------------------------------------------------


@pytest.mark.slow  # DVC pushes and pulls: tens of seconds
def test_dvc_push_to_a_full_remote_then_with_room(tmp_path: Path, small_disk: SmallDisk) -> None:
    """A local DVC remote on a 2 MB disk, 5 MB to push: the push fails naming the remote folder and the full disk;
    every object under an md5 name is whole; with room the push completes and a clone pulls every byte."""
    origin = tmp_path / "origin"
    for i in range(20):
        path = origin / "data" / f"c{i % 2}" / f"{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.sha256(str(i).encode()).digest() * 8192)  # 256 KiB each, distinct
    remote = small_disk.mount("2m").path / "remote"
    git_init(origin)
    for cmd in (
        ["dvc", "init", "-q"],
        ["dvc", "add", "-q", "data"],
        ["dvc", "remote", "add", "-d", "store", str(remote)],
    ):
        run(cmd, cwd=origin)
    run(["dvc", "remote", "modify", "store", "verify", "true"], cwd=origin)
    git_commit(origin, "data")

    full = run(["dvc", "push"], cwd=origin, check=False)
    print(f"dvc push to a full remote: exit {full.returncode}\n{full.stderr[-1200:]}")
    assert full.returncode == 1
    assert "No space left on device" in full.stderr and str(remote) in full.stderr, full.stderr
    assert "failed to upload" in full.stderr, full.stderr
    objects = [p for p in (remote / "files/md5").rglob("*") if p.is_file()]
    partial = [p for p in objects if p.name.endswith(".tmp")]
    named = [p for p in objects if not p.name.endswith(".tmp")]
    print(f"left in the remote: {len(named)} whole objects, {len(partial)} partial uploads (.tmp)")
    for obj in named:  # a partial upload never carries an md5 name
        assert hashlib.md5(obj.read_bytes()).hexdigest() == obj.parent.name + obj.name.removesuffix(".dir")

    small_disk.resize("16m")
    run(["dvc", "push", "-q"], cwd=origin)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=tmp_path)
    run(["dvc", "pull", "-q"], cwd=clone)
    assert md5s(clone / "data") == md5s(origin / "data")
    left = list((remote / "files/md5").rglob("*.tmp"))
    print(f"partial uploads still in the remote after the successful push: {len(left)}")
