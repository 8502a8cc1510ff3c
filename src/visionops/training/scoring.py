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

from visionops.config import EvaluateParams
from visionops.contracts.data import read_split, split_list
from visionops.contracts.model import ROTATIONS, ModelInfo
from visionops.contracts.results import write_per_class, write_predictions
from visionops.data.cache import DecodedOnAccess
from visionops.data.dataset import Batches
from visionops.files import atomic_write_bytes
from visionops.interfaces import check_labels
from visionops.progress import keras_quiet
from visionops.training.gallery import write_gallery
from visionops.training.metrics import score
from visionops.training.plots import plot_confusion


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
    write_predictions(out_dir, predictions)
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
