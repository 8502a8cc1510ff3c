"""The test metrics of a scored set, from its true classes and predicted probabilities: what evaluate reports, what
promote compares, and what promote's evidence resamples. Plain NumPy and scikit-learn: no model is needed."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


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
    """One-vs-rest ROC-AUC averaged over the classes present with both positives and negatives (Mann-Whitney: the
    mean rank of the positives, ties ranked alike)."""
    scores = []
    for c in range(probs.shape[1]):
        positive = y_true == c
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos and n_neg:
            ranks = rankdata(probs[:, c])
            scores.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(scores)) if scores else None


def _macro_f1(y_true: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """F1 per class from the confusion counts, averaged over all classes (0 for a class never seen nor predicted)."""
    counts = np.bincount(y_true * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    denominator = counts.sum(axis=0) + counts.sum(axis=1)
    return float(np.mean(np.divide(2 * np.diag(counts), denominator, out=np.zeros(classes), where=denominator > 0)))


def metric(name: str, y_true: np.ndarray, probs: np.ndarray, *, bins: int = 10) -> float | None:
    """One metric by its name in metrics.json (``accuracy``, ``macro_f1``, ``top_<k>_accuracy``, ``roc_auc_ovr``,
    ``ece``) for true class indices ``y_true`` and predicted probabilities ``probs`` (N, C).

    Each follows scikit-learn's definition (tests/unit/test_evaluate_metrics.py compares them) with plain NumPy, a
    hundred times faster, since promote computes them again on each of a thousand resamples.

    Raises:
        ValueError: an unknown name.
    """
    classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    if name == "accuracy":
        return float(np.mean(predicted == y_true))
    if name == "macro_f1":
        return _macro_f1(y_true, predicted, classes)
    if top := re.fullmatch(r"top_(\d+)_accuracy", name):
        k = min(int(top.group(1)), classes)
        ranked = np.argsort(probs, axis=1, kind="mergesort")[:, ::-1][:, :k]  # (ties broken as scikit-learn does)
        return float(np.mean((ranked == y_true[:, None]).any(axis=1)))
    if name == "roc_auc_ovr":
        return _roc_auc(y_true, probs)
    if name == "ece":
        return expected_calibration_error(y_true, probs, bins)
    raise ValueError(f"unknown metric {name!r}")


def score(y_true: np.ndarray, probs: np.ndarray, classes: list[str], *, top_k: int, bins: int) -> Scores:
    """All metrics for true class indices ``y_true`` and predicted probabilities ``probs`` (N, C)."""
    labels = list(range(len(classes)))
    predicted = probs.argmax(axis=1)
    names = ["accuracy", "macro_f1", f"top_{min(top_k, len(classes))}_accuracy", "roc_auc_ovr", "ece"]
    metrics: dict = {n: metric(n, y_true, probs, bins=bins) for n in names}
    metrics["examples"] = len(y_true)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, predicted, labels=labels, zero_division=0)
    per_class = pd.DataFrame(
        {"class": classes, "precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)}
    )
    return Scores(metrics, per_class, confusion_matrix(y_true, predicted, labels=labels, normalize="true"))
