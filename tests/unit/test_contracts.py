"""Model interfaces: two models are comparable only when task, classes and their order, size and crop agree."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from visionops.contracts.data import SplitInfo
from visionops.contracts.model import ModelInfo, RunInfo, is_model_uri
from visionops.contracts.results import Promotion, TestMetrics
from visionops.errors import UserError
from visionops.interfaces import ClassMismatchError, check_labels, check_outputs, mismatch

SHAPES = ModelInfo(
    task="classification",
    classes=["circle", "square", "star", "triangle"],
    image_size=48,
    resize_side=55,
    model="EfficientNetB0",
)


def _with(**changes) -> ModelInfo:
    return replace(SHAPES, **changes)


def test_alike_models_are_comparable_whatever_else_differs() -> None:
    assert mismatch(SHAPES, _with(model="EfficientNetB3"), "champion v1") is None


def test_changed_classes_name_both_sets() -> None:
    reason = mismatch(_with(classes=["cat", "dog"]), SHAPES, "champion v1")
    assert reason == (
        "classes differ: this model has [cat, dog] (2), champion v1 has [circle, square, star, triangle] (4)"
    )


def test_changed_class_order_is_not_the_same_model() -> None:
    reason = mismatch(_with(classes=["square", "circle", "star", "triangle"]), SHAPES, "champion v2")
    assert reason.startswith(
        "class order differs: this model has [square, circle, star, triangle], champion v2 has "
        "[circle, square, star, triangle]"
    )


def test_changed_task_leads_the_reason() -> None:
    """The issue's rotation model: four classes, like the shapes, but another question."""
    reason = mismatch(_with(task="orientation", classes=["0", "90", "180", "270"]), SHAPES, "champion v1")
    assert reason.startswith(
        "task differs: this model answers 'orientation', champion v1 answers 'classification'; "
        "classes differ: this model has [0, 90, 180, 270] (4)"
    )


def test_input_size_and_preprocessing() -> None:
    assert mismatch(_with(image_size=64, resize_side=74), SHAPES, "champion v1") == (
        "input size differs: this model takes 64 px, champion v1 48 px"
    )
    assert mismatch(_with(resize_side=60), SHAPES, "champion v1") == (
        "preprocessing differs: this model crops 48 px from a 60-px square, champion v1 from a 55-px square"
    )


def test_labels_the_model_does_not_know_are_refused_with_both_sets() -> None:
    with pytest.raises(ClassMismatchError) as caught:
        check_labels(["circle", "cat"], SHAPES, "model artifacts/train", data="the test split artifacts/split/test.csv")
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert "trained on classes [circle, square, star, triangle]" in message
    assert "labelled [cat, circle]: [cat] are unknown to it" in message and "dvc repro train" in message
    check_labels(["circle", "star"], SHAPES, "m", data="d")  # a partial test set is fine
    check_labels(["anything"], _with(task="orientation"), "m", data="d")  # rotations are made from any image


def test_a_class_list_that_does_not_fit_the_model_is_refused() -> None:
    check_outputs(4, 48, SHAPES, source="artifacts/train")
    with pytest.raises(
        ClassMismatchError,
        match=r"outputs 10 classes at 48 px, but the class list stored with it "
        r"names 4 \[circle",
    ):
        check_outputs(10, 48, SHAPES, source="artifacts/train")
    with pytest.raises(ClassMismatchError, match="at 64 px"):
        check_outputs(4, 64, SHAPES, source="artifacts/train")


def test_model_info_round_trips_and_ignores_keys_it_does_not_know(tmp_path: Path) -> None:
    SHAPES.write(tmp_path)
    assert ModelInfo.read(tmp_path) == SHAPES == ModelInfo.read(tmp_path / "classes.json")
    newer = {**json.loads((tmp_path / "classes.json").read_text()), "added_by_a_newer_version": 1}
    (tmp_path / "classes.json").write_text(json.dumps(newer))
    assert ModelInfo.read(tmp_path) == SHAPES
    assert SHAPES.interface() == {k: newer[k] for k in ("task", "classes", "image_size", "resize_side")}
    assert SHAPES.labels(["star", "circle"]) == [2, 0]
    assert _with(task="orientation", classes=["0", "90", "180", "270"]).labels(["star", "x"]) == [0, 0]


def test_a_missing_contract_file_names_the_stage_to_run(tmp_path: Path) -> None:
    for kind, stage in ((SplitInfo, "split"), (RunInfo, "train"), (Promotion, "promote")):
        with pytest.raises(FileNotFoundError, match=f"run the {stage} stage first"):
            kind.read(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"classes\.json not found"):
        ModelInfo.read(tmp_path)


def test_model_uris_are_told_from_paths() -> None:
    assert is_model_uri("models:/shapes@champion") and is_model_uri("runs:/abc/model")
    assert not is_model_uri("artifacts/train") and not is_model_uri(Path("models/model.keras"))


def test_a_metrics_file_missing_a_metric_names_the_file_and_what_it_lacks(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.5}')
    (tmp_path / "scored.json").write_text('{"split_id": "abc"}')
    with pytest.raises(UserError) as raised:
        TestMetrics.read(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path / 'metrics.json'}: metrics.json lacks macro_f1, roc_auc_ovr, ece, examples: "
        "rerun evaluate (`dvc repro -f evaluate`)"
    )
