"""train → evaluate → predict on a tiny dataset (32 px, B0, one epoch per stage), and resume after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from corpus import good_class, write
from helpers import cli, mark_project, tiny_params, tiny_settings, tool_env

from visionops.config import AugmentStep, EvaluateParams, SplitParams, ValidateParams
from visionops.contracts.data import SplitInfo
from visionops.contracts.results import TestMetrics
from visionops.data.preprocess import load_square
from visionops.interfaces import ClassMismatchError
from visionops.stages.evaluate import evaluate
from visionops.stages.predict import predict
from visionops.stages.split import split
from visionops.stages.train import train
from visionops.stages.validate import validate

pytestmark = pytest.mark.slow
AUGMENT = [AugmentStep(name="HorizontalFlip", p=0.5), AugmentStep(name="RandomBrightnessContrast", p=0.5)]
CLASSES = ["ant", "bee", "cow"]


def _dataset(root: Path, per_class: int = 8) -> tuple[Path, Path]:
    data = root / "data"
    for label in CLASSES:
        good_class(data, label, per_class)
    validate(data, ValidateParams(min_images_per_class=3), root / "validate")
    split(root / "validate" / "manifest.csv", SplitParams(test_ratio=0.25, val_ratio=0.2, seed=1), root / "split")
    return data, root / "split"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("train")
    data, split_dir = _dataset(root)
    result = train(
        tiny_settings(augment=AUGMENT, workers=2), data_dir=data, split_dir=split_dir, out_dir=root / "train"
    )
    return root, data, split_dir, result


def test_outputs(trained) -> None:
    root, _, _, result = trained
    out = root / "train"
    for name in ("model.keras", "history.csv", "classes.json", "weights.json", "params.json", "augment_preview.png"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert result.info.classes == CLASSES, "class names come from the data"
    assert result.model_path == out / "model.keras" and result.run is None, "train alone logs nowhere"
    info = json.loads((out / "classes.json").read_text())
    assert info["classes"] == CLASSES and info["image_size"] == 32 and info["task"] == "classification"
    assert json.loads((out / "weights.json").read_text())["used"] == "random"
    history = pd.read_csv(out / "history.csv")
    assert history["stage"].tolist() == [1, 2] and history["epoch"].tolist() == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    params = json.loads((out / "params.json").read_text())
    assert params["train"]["image_size"] == 32 and params["augment"][0]["name"] == "HorizontalFlip"
    assert not (root / ".resume").exists() or not any((root / ".resume").iterdir()), "resume state is cleaned"


def test_evaluate(trained) -> None:
    root, data, split_dir, _ = trained
    holdout = root / "holdout"
    for label in CLASSES[:2]:
        good_class(holdout, label, 2, start=500)
    params = EvaluateParams(top_k=2, holdout_dir=str(holdout))
    result = evaluate(root / "train", data_dir=data, split_dir=split_dir, params=params, out_dir=root / "ev")
    assert result.run_id is None and result.warnings == [], "no run.json beside the model: no run to log into"
    metrics = result.metrics
    assert metrics == json.loads((root / "ev" / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "top_2_accuracy", "roc_auc_ovr", "ece", "examples"):
        assert key in metrics, key
    assert TestMetrics.read(root / "ev").split_id == SplitInfo.read(split_dir).split_id, "scored.json names the split"
    assert metrics["examples"] == len(pd.read_csv(split_dir / "test.csv"))
    assert metrics["holdout"]["examples"] == 4
    predictions = pd.read_csv(root / "ev" / "predictions.csv")
    assert set(predictions["label"]) <= set(CLASSES)
    assert np.allclose(predictions[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1, atol=1e-4)
    per_class = pd.read_csv(root / "ev" / "per_class.csv")
    assert per_class["class"].tolist() == CLASSES
    assert (root / "ev" / "confusion_matrix.png").is_file() and (root / "ev" / "holdout" / "predictions.csv").is_file()
    wrong = predictions[predictions["label"] != predictions["predicted"]]
    listed = pd.read_csv(root / "ev" / "errors" / "misclassified.csv")
    assert sorted(listed["path"]) == sorted(wrong["path"]), "every misclassified test image is listed"
    for _, group in listed.groupby("label", sort=False):
        assert group["p_true"].is_monotonic_increasing, "worst first within each true class"
    page = (root / "ev" / "errors" / "gallery.html").read_text()
    assert page.count("<figure>") == min(len(wrong), 12 * len(CLASSES))
    assert (root / "ev" / "errors" / "gallery.png").stat().st_size > 0


def test_a_model_meets_data_of_other_classes_with_a_clear_error(trained, tmp_path: Path) -> None:
    """evaluate on a split with other classes, a hold-out folder with an unknown class, a mismatched class list."""
    root, data, split_dir, _ = trained
    other = tmp_path / "other"
    for label in ("ant", "dog"):
        good_class(other / "data", label, 6)
    validate(other / "data", ValidateParams(min_images_per_class=3), other / "validate")
    split(other / "validate" / "manifest.csv", SplitParams(test_ratio=0.5, seed=1), other / "split")
    with pytest.raises(
        ClassMismatchError,
        match=r"trained on classes \[ant, bee, cow\], but the test split .*"
        r"labelled \[ant, dog\]: \[dog\] are unknown",
    ):
        evaluate(
            root / "train",
            data_dir=other / "data",
            split_dir=other / "split",
            params=EvaluateParams(),
            out_dir=tmp_path / "ev",
        )
    holdout = tmp_path / "holdout"
    good_class(holdout, "dog", 2)
    with pytest.raises(ClassMismatchError, match=r"evaluate.holdout_dir .* is labelled \[dog\]"):
        params = EvaluateParams(holdout_dir=str(holdout))
        evaluate(root / "train", data_dir=data, split_dir=split_dir, params=params, out_dir=tmp_path / "ev2")

    copied = tmp_path / "copied"  # model.keras of this run beside the class list of another (4 classes)
    copied.mkdir()
    (copied / "model.keras").write_bytes((root / "train" / "model.keras").read_bytes())
    info = json.loads((root / "train" / "classes.json").read_text())
    (copied / "classes.json").write_text(json.dumps({**info, "classes": ["a", "b", "c", "d"]}))
    with pytest.raises(
        ClassMismatchError, match="outputs 3 classes at 32 px, but the class list stored with it names 4"
    ):
        predict(copied, data)


def test_predict_folder_and_file(trained, tmp_path: Path) -> None:
    root, data, _, _ = trained
    images = tmp_path / "in"
    good_class(images, "x", 3, start=900)
    write(images, "x/broken.jpg", b"nope")
    table = predict(root / "train", images, tmp_path / "out", top_k=2)
    assert len(table) == 4 and (table["error"] != "").sum() == 1
    ok = table[table["error"] == ""]
    assert set(ok["label_1"]) <= set(CLASSES) and (ok["p_1"] >= ok["p_2"]).all()
    assert pd.read_csv(tmp_path / "out" / "predictions.csv").shape == table.shape
    single = predict(root / "train" / "model.keras", next(data.rglob("*.jpg")), top_k=5)
    assert len(single) == 1 and "label_3" in single.columns and "label_4" not in single.columns


def test_orientation_task(tmp_path: Path) -> None:
    data, split_dir = _dataset(tmp_path, per_class=6)
    params = tiny_params(task="orientation", finetune={"epochs": 0})  # (the head alone: what is checked is the task's)
    settings = tiny_settings(params, augment=[AugmentStep(name="GaussNoise", p=0.5)])
    result = train(settings, data_dir=data, split_dir=split_dir, out_dir=tmp_path / "train")
    assert result.info.classes == ["0", "90", "180", "270"] and result.info.task == "orientation"
    evaluate(tmp_path / "train", data_dir=data, split_dir=split_dir, params=EvaluateParams(), out_dir=tmp_path / "ev")
    predictions = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    test = pd.read_csv(split_dir / "test.csv")
    assert len(predictions) == 4 * len(test), "every test image is scored in all four rotations"
    assert sorted(predictions["rotation"].unique()) == [0, 90, 180, 270]
    assert (predictions.groupby("path").size() == 4).all()


@pytest.mark.faults
def test_resume_after_kill(tmp_path: Path) -> None:
    """Kill `visionops train` during stage 2; the rerun skips stage 1, resumes stage 2, ends with every epoch once."""
    data, split_dir = _dataset(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(
        "train: {image_size: 32, weights: null, batch_size: 8, model: EfficientNetB0, early_stopping_patience: 50,\n"
        "        head: {epochs: 1}, finetune: {epochs: 12, unfreeze_blocks: 1}}\n"
    )
    cmd = cli(
        "train",
        "--params",
        str(params),
        "--data",
        str(data),
        "--split",
        str(split_dir),
        "--out",
        str(tmp_path / "train"),
    )
    mark_project(tmp_path)  # the project root: its MLflow store goes here, not in the repo
    env = tool_env(MLFLOW_TRACKING_URI=None)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stage2_log = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        stage2_log = next(tmp_path.glob(".resume/train-*/stage2-history.csv"), None)
        if stage2_log and len(stage2_log.read_text().splitlines()) >= 3:  # header + 2 finished epochs
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()[-3000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "train" / "model.keras").exists()
    done_before = len(stage2_log.read_text().splitlines()) - 1

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "stage 1 finished in an earlier run" in rerun.stderr
    history = pd.read_csv(tmp_path / "train" / "history.csv")
    assert history["stage"].tolist() == [1] + [2] * 12
    assert history["epoch"].tolist() == list(range(13))
    epochs_run_again = rerun.stdout.count("Epoch ")
    assert epochs_run_again <= 12 - done_before + 1, "the rerun resumed, it did not start stage 2 over"
    runs = json.loads((tmp_path / "train" / "run.json").read_text())
    assert (tmp_path / "mlflow.db").is_file() and runs["run_id"], "the resumed training logged into the project store"


def _lite(**overrides) -> dict:
    """Lite0 from the packaged ImageNet weights, tiny: what the pretrained tests train."""
    return {"model": "EfficientNetLite0", "weights": "imagenet", **overrides}


def test_pretrained_head_trains_on_cached_embeddings_that_match_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stage 1 learns from stored features, and those are what the saved model computes for the same views."""
    from visionops.data.dataset import Batches
    from visionops.training.embeddings import CACHE_ENV
    from visionops.training.head import head_model
    from visionops.training.model import load_trained
    from visionops.training.weights import build_backbone

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data, split_dir = _dataset(tmp_path)
    params = tiny_params(**_lite(head={"epochs": 3, "views": 3}, finetune={"epochs": 0}))
    result = train(tiny_settings(params, AUGMENT), data_dir=data, split_dir=split_dir, out_dir=tmp_path / "train")
    assert result.weights.used == "imagenet" and result.history["stage"].tolist() == [1, 1, 1]
    lists = {s: pd.read_csv(split_dir / f"{s}.csv") for s in ("train", "val")}
    shards = sorted((tmp_path / "cache" / "embeddings").rglob("*.npz"))
    stored = _stored(tmp_path / "cache")
    assert len(stored) == 3 * len(lists["train"]) + len(lists["val"])
    assert {k.split(":")[0] for k in stored} == set(lists["train"]["sha256"]) | set(lists["val"]["sha256"])

    model, info = load_trained(tmp_path / "train")
    fresh, _ = build_backbone(params)  # the backbone was frozen: still the packaged weights
    for ours, packaged in zip(model.layers[1].weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), packaged.numpy())
    images = np.stack([load_square(data / p, info.resize_side) for p in lists["val"]["path"]])
    val = Batches(images, info.labels(list(lists["val"]["label"])), num_classes=3, size=info.image_size, batch_size=8)
    features = np.stack([stored[f"{sha}:0:centre"] for sha in lists["val"]["sha256"]])
    from_features = head_model(model).predict(features, verbose=0)
    np.testing.assert_allclose(
        from_features, model.predict(val, verbose=0), atol=1e-5
    )  # the head learnt what it is served

    other = tiny_params(**_lite(head={"epochs": 2, "views": 3, "learning_rate": 0.01}, finetune={"epochs": 0}))
    again = train(tiny_settings(other, AUGMENT), data_dir=data, split_dir=split_dir, out_dir=tmp_path / "t2")
    assert sorted((tmp_path / "cache" / "embeddings").rglob("*.npz")) == shards, "nothing embedded again"
    assert again.history["stage"].tolist() == [1, 1]


def test_orientation_from_pretrained_weights_embeds_each_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visionops.training.embeddings import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data, split_dir = _dataset(tmp_path, per_class=6)
    params = tiny_params(**_lite(task="orientation", head={"epochs": 1, "views": 2}, finetune={"epochs": 1}))
    settings = tiny_settings(params, [AugmentStep(name="RandomBrightnessContrast", p=0.5)])
    result = train(settings, data_dir=data, split_dir=split_dir, out_dir=tmp_path / "t")
    assert result.info.task == "orientation" and result.weights.used == "imagenet"
    keys = list(_stored(tmp_path / "cache"))
    train_images = len(pd.read_csv(split_dir / "train.csv"))
    assert {int(k.split(":")[1]) for k in keys} == {0, 1, 2, 3}, "each of the four rotations is a view of its own"
    assert sum(":view1-" in k for k in keys) == 4 * train_images


def _stored(cache: Path) -> dict[str, np.ndarray]:
    """Every (key, features) pair in the embedding cache ``cache``, read from its shards."""
    found = {}
    for shard in cache.rglob("[!.]*.npz"):
        with np.load(shard) as data:
            found.update(zip(data["keys"].tolist(), data["features"], strict=True))
    return found
