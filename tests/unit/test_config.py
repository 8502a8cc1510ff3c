"""params.yaml loading: the committed file is valid, and every mistake names its key and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO

from visionops.config import ConfigError, Params
from visionops.contracts.results import write_resolved
from visionops.params import load_params, parse_params


def test_committed_params_are_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.split.test_ratio == pytest.approx(0.2)
    assert params.validate_.max_pixels > 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"split": {"test_ratoi": 0.3}}, ["split.test_ratoi: unknown key", "Did you mean 'test_ratio'?"]),
        ({"valdate": {}}, ["valdate: unknown key", "Did you mean 'validate'?"]),
        ({"split": {"test_ratio": 1.5}}, ["split.test_ratio", "less than 1", "1.5"]),
        ({"split": {"test_ratio": 0}}, ["split.test_ratio", "greater than 0"]),
        ({"split": {"val_ratio": -0.1}}, ["split.val_ratio", "greater than or equal to 0"]),
        ({"split": {"seed": "abc"}}, ["split.seed", "valid integer", "'abc'"]),
        ({"validate": {"allowed_formats": ["JPG"]}}, ["validate.allowed_formats.0", "'JPEG'"]),
        ({"validate": {"channels": [5]}}, ["validate.channels.0"]),
        ({"validate": {"min_side": 0}}, ["validate.min_side", "greater than or equal to 1"]),
        ({"validate": {"classes": ["a", "a"]}}, ["validate.classes", "unique"]),
        ({"split": {"test_ratio": 0.9, "val_ratio": 0.9}}, ["split", "less than 5%"]),
        (["not", "a", "mapping"], ["expected a mapping"]),
        ({"train": {"optimizer": "adam", "weight_decay": 0.05}}, ["train", "use optimizer: adamw"]),
        ({"train": {"crop_scale": [0.8, 0.3]}}, ["train.crop_scale", "0 < low <= high <= 1"]),
        ({"train": {"finetune": {"schedule": "step"}}}, ["train.finetune.schedule", "'cosine'"]),
    ],
)
def test_bad_values_name_the_key(raw, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_params(raw, source="params.yaml")
    for fragment in expected:
        assert fragment in str(info.value)


def test_all_problems_are_listed_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_params({"split": {"test_ratio": 2, "seed": -1}})
    assert "split.test_ratio" in str(info.value) and "split.seed" in str(info.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("split:\n  test_ratio: [0.2\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML"):
        load_params(broken)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "params.yaml"
    empty.write_text("")
    assert load_params(empty) == Params()


def test_resolved_config_is_saved(tmp_path: Path) -> None:
    params = parse_params({"split": {"seed": 7}})
    path = write_resolved(tmp_path, params.split)
    assert json.loads(path.read_text()) == {"seed": 7, "test_ratio": 0.2, "val_ratio": 0.1}
