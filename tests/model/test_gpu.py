"""GPU-only paths: mixed precision and XLA are switched on automatically. Skipped without a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from corpus import good_class
from helpers import SIZE, tiny_params, tiny_settings

from visionops.config import SplitParams, ValidateParams
from visionops.stages.split import split
from visionops.stages.train import train
from visionops.stages.validate import validate
from visionops.training.distribute import configure_precision
from visionops.training.model import build_model, freeze_for_stage
from visionops.training.weights import build_backbone

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_with_float32_output(restore_policy) -> None:
    device = configure_precision()
    assert device == {"gpu": True, "mixed_precision": True, "xla": True}
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    backbone, _ = build_backbone(tiny_params())
    model = build_model(backbone, 3, 0.2, freeze_batchnorm=False)
    assert model.layers[-1].compute_dtype == "float32"
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
    x = np.random.default_rng(0).uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    loss = model.train_on_batch(x, np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2, 0, 1]])
    assert np.isfinite(loss)
    assert model.predict(x, verbose=0).dtype == np.float32


def test_train_records_the_gpu_settings(tmp_path: Path, restore_policy) -> None:
    data = tmp_path / "data"
    for label in ("a", "b"):
        good_class(data, label, 8)
    validate(data, ValidateParams(min_images_per_class=3), tmp_path / "v")
    split(tmp_path / "v" / "manifest.csv", SplitParams(seed=1), tmp_path / "s")
    train(tiny_settings(), data_dir=data, split_dir=tmp_path / "s", out_dir=tmp_path / "t")
    info = json.loads((tmp_path / "t" / "classes.json").read_text())
    assert info["gpu"] and info["mixed_precision"] and info["xla"]


def test_the_gpu_recipe_trains_every_block_of_lite0_at_224_px(restore_policy) -> None:
    """docs/scaling.md's GPU recipe: EfficientNetLite0 from the packaged ImageNet weights, every block unfrozen
    (BatchNormalization frozen), 224 px, mixed precision and XLA."""
    configure_precision()
    backbone, used = build_backbone(tiny_params(model="EfficientNetLite0", weights="imagenet", image_size=224))
    model = build_model(backbone, 5, 0.2, freeze_batchnorm=True)
    freeze_for_stage(model, 2, "all", freeze_batchnorm=True)
    assert used.used == "imagenet" and backbone.get_layer("block1a_dwconv").compute_dtype == "float16"
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 224, 224, 3)).astype("float32")
    y = np.eye(5, dtype="float32")[rng.integers(0, 5, 32)]
    losses = [float(model.train_on_batch(x, y)) for _ in range(5)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], "five steps on one batch lower its loss"
    assert model.predict(x, verbose=0).dtype == np.float32
