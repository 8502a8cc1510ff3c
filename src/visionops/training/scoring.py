"""Scoring a trained model on a labelled set: the metrics, predictions, per-class report, confusion matrix and the
gallery of what it gets wrong. The evaluate stage scores the test split and a hold-out folder with it; promote
re-scores a champion on a new split with the same code.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import keras
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

from visionops.config import EvaluateParams
from visionops.contracts.data import read_split, split_list
from visionops.contracts.model import ROTATIONS, ModelInfo
from visionops.contracts.results import write_per_class
from visionops.data.cache import DecodedOnAccess
from visionops.data.dataset import Batches
from visionops.files import atomic_write_bytes, atomic_write_text
from visionops.interfaces import check_labels
from visionops.progress import keras_quiet
from visionops.training.gallery import write_gallery
from visionops.training.plots import plot_confusion


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


def score(y_true: np.ndarray, probs: np.ndarray, classes: list[str], *, top_k: int, bins: int) -> Scores:
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


@dataclass(frozen=True)
class LabelledSet:
    """Images to score: the files, how the reports name them, their labels (class names), and the set's title."""

    paths: list[Path]
    shown_as: list[str]
    labels: list[str]
    title: str


def score_set(
    model: keras.Model,
    info: ModelInfo,
    images: LabelledSet,
    *,
    params: EvaluateParams,
    batch_size: int,
    out_dir: Path,
) -> dict:
    """Score ``model`` on ``images`` and write the reports of that set into ``out_dir``.

    Writes predictions.csv, per_class.csv, confusion_matrix.png and errors/ (the misclassified gallery). The
    orientation task scores all four rotations of every image.

    Args:
        model: the trained model; info: its classes, task and input size.
        images: the set; its ``shown_as`` names the images in predictions.csv.
        params: the ``evaluate`` section of params.yaml; batch_size: images per forward pass (runtime).
        out_dir: where the reports go.

    Returns:
        The set's metrics (accuracy, macro_f1, top_k_accuracy, roc_auc_ovr, ece, examples).
    """
    classes, title = info.classes, images.title
    batches = Batches(  # decoded batch by batch, on every core: memory does not grow with the set
        DecodedOnAccess(images.paths, info.resize_side),
        info.labels(images.labels),
        num_classes=len(classes),
        size=info.image_size,
        batch_size=batch_size,
        task=info.task,
        workers=os.cpu_count() or 1,
    )
    probs = model.predict(batches, verbose=keras_quiet())
    scores = score(batches.label, probs, classes, top_k=params.top_k, bins=params.calibration_bins)
    predictions = pd.DataFrame({"path": np.asarray(images.shown_as, dtype=object)[batches.index]})
    if info.task == "orientation":
        predictions["rotation"] = np.asarray(ROTATIONS)[batches.rotation]
    predictions["label"] = np.asarray(classes, dtype=object)[batches.label]
    predictions["predicted"] = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    predictions["confidence"] = probs.max(axis=1).round(6)
    for c, name in enumerate(classes):
        predictions[f"p_{name}"] = probs[:, c].round(6)
    atomic_write_text(out_dir / "predictions.csv", predictions.to_csv(index=False, lineterminator="\n"))
    write_per_class(out_dir, scores.per_class)
    atomic_write_bytes(out_dir / "confusion_matrix.png", plot_confusion(scores.confusion, classes, title))
    seen = functools.partial(batches.example, rng=None)  # example j as the model saw it (centre crop, rotation)
    write_gallery(out_dir / "errors", predictions, classes, image=seen, per_class=params.gallery_per_class, title=title)
    return scores.metrics


def score_split(
    model: keras.Model,
    info: ModelInfo,
    name: str,
    *,
    data_dir: Path,
    split_dir: Path,
    params: EvaluateParams,
    batch_size: int,
    out_dir: Path,
) -> dict:
    """Score ``model`` (called ``name`` in messages) on the test split; its metrics, with the split's id.

    Raises:
        ClassMismatchError: the test split holds classes the model was not trained on.
    """
    lists, split = read_split(split_dir)
    test = lists["test"]
    check_labels(list(test["label"]), info, f"model {name}", data=f"the test split {split_list(split_dir, 'test')}")
    images = LabelledSet(
        [Path(data_dir) / p for p in test["path"]], list(test["path"]), list(test["label"]), "test split"
    )
    metrics = score_set(model, info, images, params=params, batch_size=batch_size, out_dir=out_dir)
    return {**metrics, "split_id": split.split_id}
