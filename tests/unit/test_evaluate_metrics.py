"""Evaluation metrics on hand-made predictions, where the right answer is known."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from visionops.training.plots import plot_confusion
from visionops.training.scoring import expected_calibration_error, score

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
