"""Corrupted data: a damaged model.keras, a damaged disk-cache file.

Each damage is made the way it happens: a file cut short (a copy or a download interrupted, a full disk) or one
byte flipped (bit rot, a bad disk, a bad transfer). What is checked: the damage is found before anything uses the
file, the user is told what to do, and nothing downstream is written from the damaged bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from corpus import good_class
from helpers import cli, run, tiny_params, tiny_project

pytestmark = [pytest.mark.e2e]
TRAIN_PARAMS = "train: {image_size: 32, weights: null, batch_size: 8, workers: 1, finetune: {epochs: 1}}\n"


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
    from visionops.train import train

    project = tiny_project(tmp_path_factory.mktemp("damaged") / "project", TRAIN_PARAMS)
    train(project / "data", project / "artifacts/split", tiny_params(), [], project / "artifacts/train")
    return project


def _run_in_project_store(project: Path) -> str:
    """A run in the project's own MLflow store and run.json naming it: what `visionops train` leaves after an
    outage kept it from logging the model (so `visionops log-run` would log model.keras now)."""
    import mlflow

    from visionops.contracts import RunInfo

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run("0", run_name="damaged").info.run_id
    RunInfo(run_id, "damaged", "0", uri).write(project / "artifacts/train")
    return run_id


@pytest.mark.slow  # trains a tiny model, then starts visionops (TensorFlow) several times
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_model_is_refused_with_the_fix(trained_project: Path, damage: str, tmp_path: Path) -> None:
    """evaluate, predict and log-run refuse a truncated / byte-flipped model.keras, say how to restore it, and write
    nothing from it; with the file restored (what `dvc checkout` does) evaluate runs."""
    import mlflow

    from visionops.tracking import MODEL_URI_TAG

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
    """A disk cache (train.cache: disk) cut short, with a flipped pixel byte, or without the checksum its fill writes
    last (a fill killed between the two) is never read: it is decoded again, with a warning saying why."""
    from visionops.cache import cache_damage, cache_images, checksum_file

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
    with caplog.at_level(logging.WARNING, logger="visionops.cache"):
        again = cache_images(paths, 40, cache_dir=folder)
    print(caplog.text)
    assert f"disk cache {target} is not usable" in caplog.text and CACHE_REASONS[damage] in caplog.text
    assert np.array_equal(again, decoded), "the rebuilt cache holds the decoded images, not the damaged bytes"
    assert cache_damage(target, decoded.shape) is None
    assert sorted(p.name for p in folder.iterdir()) == [target.name, checksum_file(target).name], "no temp left"
