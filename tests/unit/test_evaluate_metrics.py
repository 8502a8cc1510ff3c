"""Evaluation metrics on hand-made predictions, where the right answer is known."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, top_k_accuracy_score

from visionops.training.metrics import expected_calibration_error, metric, score
from visionops.training.plots import plot_confusion

CLASSES = ["a", "b", "c"]


def test_perfect_predictions() -> None:
    y = np.array([0, 1, 2, 1])
    probs = np.eye(3)[y]
    scores = score(y, probs, CLASSES, top_k=2, bins=10)
    assert scores.metrics["accuracy"] == 1 and scores.metrics["macro_f1"] == 1
    assert scores.metrics["roc_auc_ovr"] == 1 and scores.metrics["ece"] == pytest.approx(0)
    assert np.array_equal(scores.confusion, np.eye(3))
    assert scores.per_class["support"].tolist() == [1, 2, 1]


def test_known_values() -> None:
    y = np.array([0, 0, 1, 2])
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4]])
    m = score(y, probs, CLASSES, top_k=2, bins=10).metrics
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["top_2_accuracy"] == pytest.approx(0.75)  # row 2: true class 0 is third
    # ECE by hand: bin (0.4,0.5] holds two wrong 0.5s: 2/4*0.5; bin (0.5,0.6] a right 0.6: 1/4*0.4;
    # bin (0.7,0.8] a right 0.8: 1/4*0.2.
    assert m["ece"] == pytest.approx(0.25 + 0.1 + 0.05)


def test_ece_of_a_calibrated_model_is_small() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.34, 1.0, 20000)
    correct = rng.random(20000) < confidence
    probs = np.zeros((20000, 3))
    probs[:, 0] = confidence
    probs[:, 1] = 1 - confidence
    y = np.where(correct, 0, 1)
    assert expected_calibration_error(y, probs, bins=10) < 0.02


def test_roc_auc_skips_absent_classes() -> None:
    y = np.array([0, 0, 1, 1])  # class c never occurs
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1]])
    assert score(y, probs, CLASSES, top_k=1, bins=10).metrics["roc_auc_ovr"] == pytest.approx(1.0)


def test_confusion_png() -> None:
    png = plot_confusion(np.eye(3), CLASSES, "test")
    assert Image.open(io.BytesIO(png)).format == "PNG"


@pytest.mark.parametrize("seed", range(6))
def test_each_metric_is_scikit_learns(seed: int) -> None:
    """The NumPy metrics promote resamples, against scikit-learn's own functions: random probabilities, probabilities
    rounded as predictions.csv stores them (ties), classes never predicted or absent."""
    rng = np.random.default_rng(seed)
    n, classes = int(rng.integers(5, 60)), int(rng.integers(3, 7))
    probs = rng.dirichlet(np.full(classes, 0.3), n)
    if seed % 2:
        probs = probs.round(1)  # ties among the scores
    y = rng.integers(0, max(1, classes - seed % 3), n)  # some classes absent when seed % 3
    labels = list(range(classes))
    predicted = probs.argmax(axis=1)
    expected = {
        "accuracy": accuracy_score(y, predicted),
        "macro_f1": f1_score(y, predicted, labels=labels, average="macro", zero_division=0),
        "top_2_accuracy": top_k_accuracy_score(y, probs, k=2, labels=labels),
    }
    aucs = [roc_auc_score(y == c, probs[:, c]) for c in labels if 0 < (y == c).sum() < n]
    expected["roc_auc_ovr"] = np.mean(aucs) if aucs else None
    for name, value in expected.items():
        assert metric(name, y, probs) == (value if value is None else pytest.approx(value, abs=1e-12)), name
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        metric("f1", y, probs)
