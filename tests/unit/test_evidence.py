"""Promote's evidence on prediction files where the answer is known: identical models, a clearly better one, a lost
class, a lower-is-better metric, the orientation task's rows, and files that cannot be paired."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from visionops.contracts.results import write_predictions
from visionops.errors import UserError
from visionops.training.evidence import compare

CLASSES = ["cat", "dog", "eel"]


def _file(folder: Path, labels: list[str], predicted: list[str], *, sure: float = 0.8, **extra) -> Path:
    """A predictions file: each image gets ``sure`` on its predicted class, the rest shared by the others."""
    rows = pd.DataFrame({"path": [f"{label}/{i:03d}.jpg" for i, label in enumerate(labels)], **extra, "label": labels})
    rows["predicted"], rows["confidence"] = predicted, sure
    for c in CLASSES:
        rows[f"p_{c}"] = [sure if p == c else (1 - sure) / (len(CLASSES) - 1) for p in predicted]
    folder.mkdir(parents=True, exist_ok=True)
    write_predictions(folder, rows)
    return folder / "predictions.csv"


LABELS = [CLASSES[i % 3] for i in range(150)]


def _wrong(labels: list[str], every: int) -> list[str]:
    """The labels, with every ``every``-th answer moved to the next class."""
    return [CLASSES[(CLASSES.index(y) + 1) % 3] if i % every == 0 else y for i, y in enumerate(labels)]


def test_the_same_predictions_twice_gain_nothing(tmp_path: Path) -> None:
    answers = _wrong(LABELS, 4)
    a, b = _file(tmp_path / "a", LABELS, answers), _file(tmp_path / "b", LABELS, answers)
    e = compare(a, b, "macro_f1", higher_is_better=True, confidence=0.95, seed=1)
    assert (e.gain, e.low, e.high, e.one_right, e.images) == (0.0, 0.0, 0.0, 0, 150)
    assert e.worst_class()[1] == 0.0


def test_a_clearly_better_model_has_an_interval_above_zero(tmp_path: Path) -> None:
    good = _file(tmp_path / "good", LABELS, _wrong(LABELS, 10))  # 15 wrong
    poor = _file(tmp_path / "poor", LABELS, _wrong(LABELS, 2))  # 75 wrong
    e = compare(good, poor, "accuracy", higher_is_better=True, confidence=0.95, seed=1)
    assert e.gain == pytest.approx(0.9 - 0.5) and 0 < e.low < e.gain < e.high
    assert e.one_right == 60, "the images only the better model gets right"
    reverse = compare(poor, good, "accuracy", higher_is_better=True, confidence=0.95, seed=1)
    assert reverse.high < 0 and reverse.gain == pytest.approx(-e.gain)


def test_a_few_differences_give_an_interval_across_zero_and_the_seed_repeats_it(tmp_path: Path) -> None:
    a = _file(tmp_path / "a", LABELS, _wrong(LABELS, 10))
    b = _file(tmp_path / "b", LABELS, _wrong(LABELS, 11))  # one image more or less right, here and there
    e = compare(a, b, "macro_f1", higher_is_better=True, confidence=0.95, seed=7)
    assert e.low < 0 < e.high
    assert e == compare(a, b, "macro_f1", higher_is_better=True, confidence=0.95, seed=7)
    wider = compare(a, b, "macro_f1", higher_is_better=True, confidence=0.99, seed=7)
    assert wider.low <= e.low and wider.high >= e.high


def test_per_class_recall_names_the_class_a_model_loses(tmp_path: Path) -> None:
    no_eel = ["cat" if y == "eel" else y for y in LABELS]
    e = compare(_file(tmp_path / "a", LABELS, no_eel), _file(tmp_path / "b", LABELS, LABELS), "accuracy",
                higher_is_better=True, confidence=0.95, seed=1)  # fmt: skip
    assert e.recall["eel"] == (0.0, 1.0) and e.recall["cat"] == (1.0, 1.0)
    assert e.worst_class() == ("eel", 1.0)


def test_a_lower_is_better_metric_counts_a_drop_as_gain(tmp_path: Path) -> None:
    calibrated = _file(tmp_path / "a", LABELS, _wrong(LABELS, 5), sure=0.8)  # 80 % right at 0.8: ECE 0
    overconfident = _file(tmp_path / "b", LABELS, _wrong(LABELS, 5), sure=0.99)
    e = compare(calibrated, overconfident, "ece", higher_is_better=False, confidence=0.95, seed=1)
    assert e.candidate == pytest.approx(0.0, abs=1e-9) and e.champion == pytest.approx(0.19)
    assert e.gain == pytest.approx(0.19) and e.low > 0


def test_orientation_rows_pair_by_image_and_rotation(tmp_path: Path) -> None:
    labels = LABELS[:40]
    rotations = [0, 90] * 20
    a = _file(tmp_path / "a", labels, labels, rotation=rotations)
    b = _file(tmp_path / "b", labels, labels, rotation=rotations[::-1])
    with pytest.raises(UserError, match="different images"):
        compare(a, b, "accuracy", higher_is_better=True, confidence=0.95, seed=1)
    same = _file(tmp_path / "c", labels, labels, rotation=rotations)
    assert compare(a, same, "accuracy", higher_is_better=True, confidence=0.95, seed=1).images == 40


def test_files_of_other_images_or_classes_are_refused_by_name(tmp_path: Path) -> None:
    a = _file(tmp_path / "a", LABELS, LABELS)
    fewer = _file(tmp_path / "b", LABELS[:100], LABELS[:100])
    with pytest.raises(UserError, match=r"predictions of different images") as err:
        compare(a, fewer, "accuracy", higher_is_better=True, confidence=0.95, seed=1)
    assert str(a) in str(err.value) and str(fewer) in str(err.value)
    other = pd.read_csv(a).rename(columns={"p_eel": "p_emu"})
    other.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(UserError, match="not comparable"):
        compare(a, tmp_path / "other.csv", "accuracy", higher_is_better=True, confidence=0.95, seed=1)
    (tmp_path / "broken.csv").write_text("path,label\n")
    with pytest.raises(UserError, match=r"broken\.csv: predictions without the column"):
        compare(a, tmp_path / "broken.csv", "accuracy", higher_is_better=True, confidence=0.95, seed=1)
    assert np.isfinite(compare(a, a, "roc_auc_ovr", higher_is_better=True, confidence=0.95, seed=1).gain)
