"""Corrupted data: a damaged model.keras, a damaged disk-cache file, a damaged DVC object (cache or remote).

Each damage is made the way it happens: a file cut short (a copy or a download interrupted, a full disk) or one
byte flipped (bit rot, a bad disk, a bad transfer). What is checked: the damage is found before anything uses the
file, the user is told what to do, and nothing downstream is written from the damaged bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from corpus import good_class
from helpers import cli, md5s, run, tiny_origin, tiny_project, tiny_settings

pytestmark = [pytest.mark.e2e]
TRAIN_PARAMS = "train: {image_size: 32, weights: null, batch_size: 8, model: EfficientNetB0, finetune: {epochs: 1}}\n"


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flipped(data: bytes, at: float = 0.6) -> bytes:
    damaged = bytearray(data)
    damaged[int(len(damaged) * at)] ^= 0xFF
    return bytes(damaged)


DAMAGE: dict[str, Callable[[bytes], bytes]] = {"truncated": _truncated, "flipped": _flipped}


# --- A damaged model.keras ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project whose train stage has run (no tracking), and one MLflow run in its own store for log-run."""
    from visionops.stages.train import train

    project = tiny_project(tmp_path_factory.mktemp("damaged") / "project", TRAIN_PARAMS)
    train(
        tiny_settings(),
        data_dir=project / "data",
        split_dir=project / "artifacts/split",
        out_dir=project / "artifacts/train",
    )
    return project


def _run_in_project_store(project: Path) -> str:
    """A run in the project's own MLflow store and run.json naming it: what `visionops train` leaves after an
    outage kept it from logging the model (so `visionops log-run` would log model.keras now)."""
    import mlflow

    from visionops.contracts.model import RunInfo

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run("0", run_name="damaged").info.run_id
    RunInfo(run_id, "damaged", "0", uri).write(project / "artifacts/train")
    return run_id


@pytest.mark.faults
@pytest.mark.slow  # trains a tiny model, then starts visionops (TensorFlow) several times
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_model_is_refused_with_the_fix(trained_project: Path, damage: str, tmp_path: Path) -> None:
    """evaluate, predict and log-run refuse a truncated / byte-flipped model.keras, say how to restore it, and write
    nothing from it; with the file restored (what `dvc checkout` does) evaluate runs."""
    import mlflow

    from visionops.tracking.record import MODEL_URI_TAG

    project = trained_project
    model = project / "artifacts/train/model.keras"
    good = model.read_bytes()
    run_id = _run_in_project_store(project)
    try:
        model.write_bytes(DAMAGE[damage](good))
        outcomes = {
            "evaluate": run(cli("evaluate", "--out", str(tmp_path / "ev")), cwd=project, check=False),
            "predict": run(cli("predict", "data", "--out", str(tmp_path / "pred")), cwd=project, check=False),
            "log-run": run(cli("log-run"), cwd=project, check=False),
        }
        for command, proc in outcomes.items():
            message = " ".join(proc.stderr.split())  # rich wraps long lines
            print(f"{command} with a {damage} model.keras: exit {proc.returncode}: {message[-400:]}")
            assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr, (command, proc.stderr)
            for part in ("artifacts/train/model.keras is damaged", "dvc checkout artifacts/train/model.keras"):
                assert part in message, (command, part, message)
            assert "dvc repro -f train" in message, (command, message)
        assert not (tmp_path / "ev/metrics.json").exists() and not (tmp_path / "ev/predictions.csv").exists()
        assert not (tmp_path / "pred/predictions.csv").exists()
        tags = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_run(run_id).data.tags
        assert MODEL_URI_TAG not in tags, "no model was logged from the damaged file (promote would register it)"
    finally:
        model.write_bytes(good)
        (project / "artifacts/train/run.json").unlink()
    if damage == "truncated":  # (once is enough: the restored file is the same in both cases)
        run(cli("evaluate", "--out", str(tmp_path / "ev")), cwd=project)
        assert (tmp_path / "ev/metrics.json").is_file()


# --- A damaged disk-cache file -----------------------------------------------------------------------------------

CACHE_REASONS = {"truncated": "truncated", "flipped": "its bytes changed", "no_checksum": "no checksum file"}


@pytest.mark.parametrize("damage", CACHE_REASONS)
def test_damaged_disk_cache_is_decoded_again(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    """A disk cache (runtime.cache: disk) cut short, with a flipped pixel byte, or without the checksum its fill writes
    last (a fill killed between the two) is never read: it is decoded again, with a warning saying why."""
    from visionops.data.cache import cache_damage, cache_images, checksum_file

    paths = good_class(tmp_path / "data", "ant", 5)
    decoded = cache_images(paths, 40)  # in memory: what the images really are
    folder = tmp_path / "cache"
    cache_images(paths, 40, cache_dir=folder)
    (target,) = folder.glob("*.npy")
    assert cache_damage(target, decoded.shape) is None and checksum_file(target).is_file()
    intact = target.stat().st_ino
    assert np.array_equal(cache_images(paths, 40, cache_dir=folder), decoded)
    assert target.stat().st_ino == intact, "an intact cache is read as it is, not written again"

    if damage == "no_checksum":
        checksum_file(target).unlink()
    else:  # (in place, as a disk error would: the same file, other bytes)
        with target.open("r+b") as f:
            damaged = DAMAGE[damage](f.read())
            f.seek(0)
            f.truncate()
            f.write(damaged)
    assert CACHE_REASONS[damage] in (cache_damage(target, decoded.shape) or ""), cache_damage(target, decoded.shape)
    with caplog.at_level(logging.WARNING, logger="visionops.data.cache"):
        again = cache_images(paths, 40, cache_dir=folder)
    print(caplog.text)
    assert f"disk cache {target} is not usable" in caplog.text and CACHE_REASONS[damage] in caplog.text
    assert np.array_equal(again, decoded), "the rebuilt cache holds the decoded images, not the damaged bytes"
    assert cache_damage(target, decoded.shape) is None
    assert sorted(p.name for p in folder.iterdir()) == [target.name, checksum_file(target).name], "no temp left"


# --- A torn per-epoch backup --------------------------------------------------------------------------------------


def test_unreadable_backup_is_dropped_so_the_stage_starts_again(tmp_path: Path) -> None:
    """Keras writes its per-epoch backup in place: one cut short by a full disk or a kill made every rerun fail
    (`Unable to synchronously open file`). A backup that cannot be read whole is removed before Keras loads it (the
    stage starts again); an intact one is kept. (tests/reliability/test_disk_full.py shows it on a real full disk.
    A flipped byte inside the weights is not found: HDF5 keeps no checksum of raw data.)"""
    import h5py

    from visionops.training.fitting import drop_unreadable_backup

    backup = tmp_path / "stage1-backup"
    backup.mkdir()
    with h5py.File(backup / "latest.weights.h5", "w") as f:
        f["layers/dense/vars/0"] = np.arange(50_000, dtype="float32")
    (backup / "training_metadata.json").write_text('{"epoch": 1}')
    drop_unreadable_backup(backup, 1)
    assert (backup / "latest.weights.h5").is_file(), "an intact backup is kept"

    weights = backup / "latest.weights.h5"
    weights.write_bytes(_truncated(weights.read_bytes()))
    drop_unreadable_backup(backup, 1)
    assert not backup.exists(), "a torn backup is removed with its metadata: the stage starts again"


# --- A damaged object in the DVC remote --------------------------------------------------------------------------


def _object(store: Path, md5: str) -> Path:
    """Where a DVC 3 cache or remote folder keeps the object ``md5``."""
    return store / "files" / "md5" / md5[:2] / md5[2:]


@pytest.mark.faults
@pytest.mark.slow  # a tiny project generated, pushed and pulled: tens of seconds
def test_damaged_remote_object_is_refused_and_named(tmp_path: Path) -> None:
    """A byte flipped in one object of the remote: `visionops pull-data` (dvc pull, `verify = true` as .dvc/config
    sets it) refuses it, data/ gets no damaged file, the message names the file and the repair; after the repair
    (the object and the listing deleted from the remote, pushed again from an intact cache: with the listing there,
    a push skips its files, damaged or not) the pull is byte-identical."""
    origin = tiny_origin(tmp_path / "origin")  # pushed to the in-repo remote `sample`, .dvc/config as committed
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=tmp_path)
    expected = md5s(origin / "data")
    listing_md5 = yaml_md5(origin / "data.dvc")
    listing = json.loads(_object(origin / ".dvc/cache", listing_md5).read_text())
    victim = sorted(listing, key=lambda e: e["relpath"])[0]
    remote_copy = _object(clone / "dvc-remote", victim["md5"])
    remote_copy.chmod(0o644)
    remote_copy.write_bytes(_flipped(remote_copy.read_bytes()))

    failed = run(cli("pull-data"), cwd=clone, check=False)
    message = " ".join(failed.stderr.split())
    print(f"pull-data from a damaged remote: exit {failed.returncode}: {message[-900:]}")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    key = f"files/md5/{victim['md5'][:2]}/{victim['md5'][2:]}"
    listing_key = f"files/md5/{listing_md5[:2]}/{listing_md5[2:]}"
    for part in (f"{victim['relpath']} ({victim['md5']})", "damaged copies", key, listing_key, "dvc push data.dvc"):
        assert part in message, (part, message)
    pulled = md5s(clone / "data") if (clone / "data").is_dir() else {}
    assert all(expected[path] == md5 for path, md5 in pulled.items()), "no damaged file reached data/"
    assert victim["relpath"] not in pulled

    # The repair the message gives: delete the damaged object and the listing, push from an intact cache.
    for name in (key, listing_key):
        (clone / "dvc-remote" / name).unlink()
    run(["dvc", "remote", "add", "clone-remote", str(clone / "dvc-remote")], cwd=origin)
    run(["dvc", "push", "-q", "-r", "clone-remote", "data.dvc"], cwd=origin)
    run(cli("pull-data"), cwd=clone)
    assert md5s(clone / "data") == expected, "every file whole after the repair"


@pytest.mark.faults
@pytest.mark.slow  # a tiny project generated, pushed and pulled: tens of seconds
def test_damaged_cache_object_checked_out_is_refused_by_validate(tmp_path: Path) -> None:
    """A byte flipped in an object of the local DVC cache: `dvc checkout` copies it into data/ with exit 0 (DVC does
    not hash the cache objects it checks out); `visionops validate`, the first stage, refuses the file naming the
    object and the repair, and writes nothing; after the repair all is whole."""
    origin = tiny_origin(tmp_path / "origin")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=tmp_path)
    run(cli("pull-data"), cwd=clone)
    expected = md5s(clone / "data")
    listing = json.loads(_object(clone / ".dvc/cache", yaml_md5(clone / "data.dvc")).read_text())
    victim = sorted(listing, key=lambda e: e["relpath"])[0]
    cached, checked_out = _object(clone / ".dvc/cache", victim["md5"]), clone / "data" / victim["relpath"]
    cached.chmod(0o644)
    cached.write_bytes(_flipped(cached.read_bytes()))
    checked_out.unlink()

    checkout = run(["dvc", "checkout", "data.dvc"], cwd=clone, check=False)
    said = " ".join((checkout.stdout + checkout.stderr).split())
    print(f"dvc checkout from a damaged cache: exit {checkout.returncode}: {said}")
    assert md5s(clone / "data")[victim["relpath"]] != victim["md5"], "DVC checked out the damaged bytes"

    failed = run(cli("validate"), cwd=clone, check=False)
    message = " ".join(failed.stderr.split())
    print(f"validate on them: exit {failed.returncode}: {message}")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    shown = f"data/{victim['relpath']} (cache object {cached.relative_to(clone)}"
    for part in (shown, f"named {victim['md5']}", "dvc pull"):
        assert part in message, (part, message)
    assert not (clone / "artifacts/validate/manifest.csv").exists(), "nothing written from the damaged bytes"
    status = run(["dvc", "status", "data.dvc"], cwd=clone, check=False)  # (it hashes the object: its mtime changed)
    print(
        f"dvc status then: exit {status.returncode}: {' '.join(status.stdout.split())}; object kept: {cached.exists()}"
    )

    cached.unlink(missing_ok=True)  # the repair the message gives: delete the object and the file, pull again
    checked_out.unlink()
    run(cli("pull-data"), cwd=clone)  # (`dvc pull -r sample data.dvc`: the embedded sample's remote)
    assert md5s(clone / "data") == expected
    run(cli("validate"), cwd=clone)


def yaml_md5(dvc_file: Path) -> str:
    """The md5 of the (only) output a .dvc file records."""
    import yaml

    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
