"""The augmentation pipeline from params: strict names and arguments, orientation-safe, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from visionops.config import AugmentStep, ConfigError
from visionops.data.augment import build_augment, is_geometric, preview_grid, transform_names
from visionops.params import parse_params


def test_yaml_lists_become_valid_arguments() -> None:
    params = parse_params({"augment": [{"name": "RandomResizedCrop", "size": [32, 32], "scale": [0.5, 1.0]}]})
    pipeline = build_augment(params.augment, "classification", seed=0)
    out = pipeline(image=np.zeros((40, 40, 3), np.uint8))["image"]
    assert out.shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("step", "task", "fragment"),
    [
        ({"name": "HorizontalFlp"}, "classification", "Did you mean HorizontalFlip"),
        ({"name": "GaussNoise", "var_limit": [10, 50]}, "classification", "'var_limit' are not valid"),
        ({"name": "HorizontalFlip", "probability": 0.5}, "classification", "'probability' are not valid"),
        ({"name": "RandomBrightnessContrast", "p": 3}, "classification", "augment[0] (RandomBrightnessContrast)"),
        ({"name": "Rotate", "limit": 30}, "orientation", "refused for train.task=orientation"),
        ({"name": "RandomResizedCrop", "size": [8, 8]}, "orientation", "refused for train.task=orientation"),
        ({"name": "Compose"}, "classification", "unknown albumentations transform"),
    ],
)
def test_bad_steps_name_the_step(step: dict, task: str, fragment: str) -> None:
    steps = parse_params({"augment": [step]}).augment
    with pytest.raises(ConfigError) as info:
        build_augment(steps, task, seed=0)
    assert fragment in str(info.value)


def test_pixel_transforms_are_allowed_for_orientation() -> None:
    steps = [AugmentStep(name="RandomBrightnessContrast", p=1.0), AugmentStep(name="GaussNoise", p=1.0)]
    assert len(build_augment(steps, "orientation", seed=0).transforms) == 2


def test_geometric_classification() -> None:
    import albumentations as A

    assert is_geometric(A.HorizontalFlip) and is_geometric(A.Affine) and is_geometric(A.Perspective)
    assert not is_geometric(A.ColorJitter) and not is_geometric(A.GaussNoise)
    assert "HorizontalFlip" in transform_names()


def test_seeded_pipeline_repeats() -> None:
    steps = [AugmentStep(name="RandomBrightnessContrast", p=1.0), AugmentStep(name="HorizontalFlip", p=0.5)]
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    one, two = build_augment(steps, "classification", 7), build_augment(steps, "classification", 7)
    assert all(np.array_equal(one(image=image)["image"], two(image=image)["image"]) for _ in range(5))


def test_preview_grid_shape() -> None:
    grid = preview_grid(np.zeros((10, 16, 16, 3), np.uint8), columns=4)
    assert grid.shape == (48, 64, 3)
