"""How sure promote can be that a challenger is better than the champion: both models' predictions on the same test
images, compared image by image.

The gain in ``promote.metric`` gets a paired bootstrap interval: the test images are resampled with replacement
(:data:`RESAMPLES` times, seeded by the split id, so a decision is reproducible), both models are scored on each
resample, and the interval holds the middle ``confidence`` share of the gains. A paired bootstrap rather than
McNemar's exact test, because McNemar's test judges accuracy only (which images each model gets right), while
promote compares by any of evaluate's metrics, macro-F1 by default; the number of images exactly one of the two gets
right (McNemar's disagreements) is reported beside the interval. Per-class recall is compared on the whole set, so a
model that is better on average but loses a class can be refused by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from visionops.contracts.results import read_predictions
from visionops.errors import UserError
from visionops.training.metrics import metric

RESAMPLES = 1000


@dataclass(frozen=True)
class Evidence:
    """The challenger against the champion on one test set."""

    metric: str
    candidate: float
    champion: float
    gain: float  # how much better the candidate is (champion − candidate for a lower-is-better metric)
    low: float  # the gain's interval at ``confidence``
    high: float
    confidence: float
    images: int
    one_right: int  # images exactly one of the two models classifies correctly
    recall: dict[str, tuple[float, float]]  # class → (candidate's recall, champion's recall)

    def interval(self) -> str:
        """``+0.0120 [-0.0031, +0.0270] at 95%``."""
        return f"{self.gain:+.4f} [{self.low:+.4f}, {self.high:+.4f}] at {self.confidence:.0%}"

    def worst_class(self) -> tuple[str, float]:
        """The class whose recall the candidate loses most of, and how much (≤ 0: it loses none)."""
        name = max(self.recall, key=lambda c: self.recall[c][1] - self.recall[c][0])
        return name, self.recall[name][1] - self.recall[name][0]

    def to_dict(self) -> dict:
        """As decision.json stores it."""
        return {**asdict(self), "resamples": RESAMPLES}


def _paired(candidate: Path, champion: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """True class indices and both models' probabilities, row by row for the same images.

    Raises:
        UserError: the files hold other images or other classes.
    """
    ours, classes = read_predictions(candidate)
    theirs, their_classes = read_predictions(champion)
    if classes != their_classes:
        raise UserError(f"{champion} predicts classes {their_classes}, {candidate} {classes}: not comparable")
    key = ["path", "rotation"] if "rotation" in ours.columns and "rotation" in theirs.columns else ["path"]
    joined = ours.merge(theirs, on=key, how="outer", suffixes=("", "_champion"), indicator=True)
    if (joined["_merge"] != "both").any() or len(joined) != len(ours):
        raise UserError(f"{candidate} and {champion} are predictions of different images: score both on one split")
    columns = [f"p_{c}" for c in classes]
    y_true = pd.Categorical(joined["label"], categories=classes).codes.astype(np.int64)
    if (y_true < 0).any():
        raise UserError(f"{candidate} has labels outside its classes {classes}")
    champion_probs = joined[[f"{c}_champion" for c in columns]].to_numpy(np.float64)
    return y_true, joined[columns].to_numpy(np.float64), champion_probs, classes


def compare(
    candidate: Path, champion: Path, name: str, *, higher_is_better: bool, confidence: float, seed: int, bins: int = 10
) -> Evidence:
    """The challenger's predictions file against the champion's on the same images, by metric ``name``.

    Args:
        candidate, champion: predictions files (:func:`visionops.contracts.results.write_predictions`).
        name: the metric promote decides by; higher_is_better: its direction.
        confidence: the interval's level, e.g. 0.95.
        seed: the resampling seed (promote uses the split id), so the same inputs give the same interval.
        bins: the ECE's bins (evaluate.calibration_bins).
    """
    y_true, ours, theirs, classes = _paired(candidate, champion)
    sign = 1.0 if higher_is_better else -1.0

    def gain(rows: np.ndarray) -> float | None:
        a, b = metric(name, y_true[rows], ours[rows], bins=bins), metric(name, y_true[rows], theirs[rows], bins=bins)
        return None if a is None or b is None else sign * (a - b) + 0.0  # (+ 0.0: no "-0.0000" for equal scores)

    everything = np.arange(len(y_true))
    rng = np.random.default_rng(seed)
    gains = [g for _ in range(RESAMPLES) if (g := gain(rng.integers(0, len(y_true), len(y_true)))) is not None]
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(gains, [tail, 1.0 - tail]) if gains else (np.nan, np.nan)
    right_ours, right_theirs = ours.argmax(axis=1) == y_true, theirs.argmax(axis=1) == y_true
    recall = {
        c: (float(right_ours[y_true == i].mean()), float(right_theirs[y_true == i].mean()))
        for i, c in enumerate(classes)
        if (y_true == i).any()
    }
    return Evidence(
        metric=name,
        candidate=_number(metric(name, y_true, ours, bins=bins)),
        champion=_number(metric(name, y_true, theirs, bins=bins)),
        gain=_number(gain(everything)),
        low=float(low),
        high=float(high),
        confidence=confidence,
        images=len(y_true),
        one_right=int((right_ours != right_theirs).sum()),
        recall=recall,
    )


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)
