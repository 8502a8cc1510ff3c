"""The evaluate stage: score the trained model on the test split (and an optional hold-out folder).

Writes metrics.json (a DVC metric), per_class.csv and predictions.csv (DVC plots), confusion_matrix.png,
params.json and errors/ (what the model gets wrong: gallery.png, gallery.html, misclassified.csv,
per_class_errors.csv). The orientation task scores all four rotations of every test image. A model is never
scored on data labelled with classes it does not know: that stops with both class sets named.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

from visionops.config import EvaluateParams, save_resolved
from visionops.contracts import check_labels, read_split
from visionops.dataset import ROTATIONS, Batches, cache_images
from visionops.files import atomic_write_bytes, atomic_write_text, write_json
from visionops.gallery import write_gallery
from visionops.model import load_trained
from visionops.plots import plot_confusion
from visionops.predict import image_files


@dataclass(frozen=True)
class Scores:
    """Metrics of one scored set."""

    metrics: dict
    per_class: pd.DataFrame
    confusion: np.ndarray


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins by their size."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def _roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """One-vs-rest ROC-AUC averaged over the classes present with both positives and negatives."""
    scores = [
        roc_auc_score(y_true == c, probs[:, c]) for c in range(probs.shape[1]) if 0 < (y_true == c).sum() < len(y_true)
    ]
    return float(np.mean(scores)) if scores else None


def score(y_true: np.ndarray, probs: np.ndarray, classes: list[str], top_k: int, bins: int) -> Scores:
    """All metrics for true class indices ``y_true`` and predicted probabilities ``probs`` (N, C)."""
    labels = list(range(len(classes)))
    predicted = probs.argmax(axis=1)
    k = min(top_k, len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, predicted, labels=labels, zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "macro_f1": float(f1_score(y_true, predicted, labels=labels, average="macro", zero_division=0)),
        f"top_{k}_accuracy": float(top_k_accuracy_score(y_true, probs, k=k, labels=labels)),
        "roc_auc_ovr": _roc_auc(y_true, probs),
        "ece": expected_calibration_error(y_true, probs, bins),
        "examples": len(y_true),
    }
    per_class = pd.DataFrame(
        {"class": classes, "precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}
    )
    return Scores(metrics, per_class, confusion_matrix(y_true, predicted, labels=labels, normalize="true"))


def _predict_set(model, info: dict, paths: list[Path], labels: list[int], batch_size: int):
    batches = Batches(
        cache_images(paths, info["resize_side"]), labels, len(info["classes"]), info["image_size"], batch_size,
        task=info["task"],
    )  # fmt: skip
    probs = model.predict(batches, verbose=0)
    return batches, probs


def _score_and_write(model, info, paths, labels, rel_paths, params, out_dir: Path, title: str) -> dict:
    classes = info["classes"]
    batches, probs = _predict_set(model, info, paths, labels, params.batch_size)
    scores = score(batches.label, probs, classes, params.top_k, params.calibration_bins)
    predictions = pd.DataFrame({"path": np.asarray(rel_paths, dtype=object)[batches.index]})
    if info["task"] == "orientation":
        predictions["rotation"] = np.asarray(ROTATIONS)[batches.rotation]
    predictions["label"] = np.asarray(classes, dtype=object)[batches.label]
    predictions["predicted"] = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    predictions["confidence"] = probs.max(axis=1).round(6)
    for c, name in enumerate(classes):
        predictions[f"p_{name}"] = probs[:, c].round(6)
    atomic_write_text(out_dir / "predictions.csv", predictions.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(out_dir / "per_class.csv", scores.per_class.round(6).to_csv(index=False, lineterminator="\n"))
    atomic_write_bytes(out_dir / "confusion_matrix.png", plot_confusion(scores.confusion, classes, title))
    seen = functools.partial(batches.example, rng=None)  # example j as the model saw it (centre crop, rotation)
    write_gallery(out_dir / "errors", predictions, classes, seen, params.gallery_per_class, title)
    return scores.metrics


def holdout_files(root: Path) -> tuple[list[Path], list[str]]:
    """Image files of a class-per-folder hold-out set, with their labels (folder names); loose files are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"evaluate.holdout_dir: {root} is not a folder")
    files = [p for p in image_files(root) if len(p.relative_to(root).parts) > 1]  # (loose files have no label)
    return files, [p.relative_to(root).parts[0] for p in files]


def evaluate(model_dir: Path, data_dir: Path, split_dir: Path, params: EvaluateParams, out_dir: Path) -> dict:
    """Run the evaluate stage.

    Args:
        model_dir: model.keras (with classes.json beside it) or the train stage's folder holding both.
        data_dir: the image root the split lists are relative to.
        split_dir: the split stage's output folder.
        params: the ``evaluate`` section of params.yaml.
        out_dir: the stage's output folder (``artifacts/evaluate``).

    Returns:
        The content of metrics.json.

    Raises:
        ClassMismatchError: the test split or the hold-out folder holds classes the model was not trained on.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    model, info = load_trained(model_dir)
    lists, split_info = read_split(split_dir)
    test = lists["test"]
    check_labels(list(test["label"]), info, f"model {model_dir}", f"the test split {Path(split_dir) / 'test.csv'}")
    labels = [0] * len(test) if info["task"] == "orientation" else [info["classes"].index(x) for x in test["label"]]
    metrics = _score_and_write(
        model, info, [data_dir / p for p in test["path"]], labels, list(test["path"]), params, out_dir, "test split"
    )
    metrics["split_id"] = split_info["split_id"]
    if params.holdout_dir:
        files, names = holdout_files(Path(params.holdout_dir))
        check_labels(names, info, f"model {model_dir}", f"evaluate.holdout_dir {params.holdout_dir}")
        held = [0] * len(files) if info["task"] == "orientation" else [info["classes"].index(n) for n in names]
        rel = [p.relative_to(params.holdout_dir).as_posix() for p in files]
        metrics["holdout"] = _score_and_write(
            model, info, files, held, rel, params, out_dir / "holdout", f"hold-out {params.holdout_dir}"
        )
    write_json(out_dir / "metrics.json", metrics)
    save_resolved(params, out_dir)
    return metrics
