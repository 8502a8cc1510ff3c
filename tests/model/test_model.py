"""Model behaviour: head, input range, freezing per stage, weights resolution, overfitting, save/load."""

from __future__ import annotations

import socket
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import SIZE, tiny_params

from visionops.config import ConfigError
from visionops.training.model import batchnorm_frozen, build_model, freeze_for_stage, load_model
from visionops.training.weights import WeightsError, build_backbone, imagenet_cache_file

pytestmark = pytest.mark.slow


def _model(weights=None, classes: int = 3, policy: str = "auto"):
    backbone, used = build_backbone(tiny_params(weights=str(weights) if weights else None))
    frozen = batchnorm_frozen(policy, used.pretrained)
    return build_model(backbone, classes, 0.2, freeze_batchnorm=frozen), used, frozen


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def test_output_is_a_float32_softmax_over_the_data_classes() -> None:
    model, _, _ = _model(classes=5)
    x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(model(x, training=False))  # (eagerly: `predict` would trace a graph first)
    assert out.shape == (2, 5) and out.dtype == np.float32
    assert np.allclose(out.sum(axis=1), 1, atol=1e-5)


def test_exactly_one_rescaling_to_unit_range() -> None:
    """The backbone divides by 255 itself; a second scaling anywhere (model or pipeline) breaks pretrained weights."""
    model, _, _ = _model()
    scales = [layer.scale for layer in _all_layers(model) if isinstance(layer, keras.layers.Rescaling)]
    assert scales == [pytest.approx(1 / 255)], scales


def test_trainable_weights_per_stage(pretrained_file: Path) -> None:
    model, used, frozen = _model(pretrained_file)
    assert used.used == "file" and used.sha256 and frozen
    freeze_for_stage(model, 1, 2, freeze_batchnorm=frozen)
    assert [w.path for w in model.trainable_weights] == ["predictions/kernel", "predictions/bias"]
    freeze_for_stage(model, 2, 1, freeze_batchnorm=frozen)
    names = [w.path for w in model.trainable_weights]
    assert names[-2:] == ["predictions/kernel", "predictions/bias"] and len(names) > 2
    assert all(n.startswith(("block7", "top_conv", "predictions")) for n in names), names
    freeze_for_stage(model, 2, "all", freeze_batchnorm=frozen)
    assert any(n.startswith("block1") for n in (w.path for w in model.trainable_weights))


def test_every_batchnorm_stays_frozen_in_stage_2(pretrained_file: Path) -> None:
    model, _, frozen = _model(pretrained_file)
    freeze_for_stage(model, 2, "all", freeze_batchnorm=frozen)
    bns = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(layer.trainable for layer in bns)
    before = [layer.moving_mean.numpy().copy() for layer in bns]
    # One step, run eagerly: the same train step without tracing the whole backbone's graph (minutes on 2 cores).
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", run_eagerly=True)
    x = np.random.default_rng(1).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    model.train_on_batch(x, np.eye(3, dtype="float32")[[0, 1, 2, 0]])
    assert all(np.array_equal(b, layer.moving_mean.numpy()) for b, layer in zip(before, bns, strict=True))


def test_batchnorm_policy() -> None:
    _, random, _ = _model()
    assert not random.pretrained
    assert not batchnorm_frozen("auto", False) and batchnorm_frozen("auto", True)
    assert batchnorm_frozen("frozen", False) and not batchnorm_frozen("trainable", True)


def test_a_tiny_batch_overfits() -> None:
    """Stage 2 as tests train it (the top block; tracing the whole backbone's training step takes minutes here)."""
    keras.utils.set_random_seed(0)
    model, _, frozen = _model(classes=2)
    freeze_for_stage(model, 2, 1, freeze_batchnorm=frozen)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[[0, 1] * 4]
    history = model.fit(x, y, epochs=20, batch_size=8, verbose=0)
    # Adam may still wobble at the end of a short run on 8 images: the last epochs, not the very last one, must fit.
    assert max(history.history["accuracy"][-5:]) >= 0.99
    assert min(history.history["loss"][-5:]) < 0.1


def test_save_load_round_trip(tmp_path: Path) -> None:
    model, _, _ = _model()
    x = np.random.default_rng(2).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    # Called eagerly: `predict` would trace a graph for each model, most of this test's time for nothing it checks.
    assert np.array_equal(model(x, training=False), loaded(x, training=False))


def test_a_model_with_code_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="refused to load, it carries Python code"):
        load_model(tmp_path / "lambda.keras")


def test_missing_weights_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.weights: weights file .* does not exist"):
        build_backbone(tiny_params(weights=str(tmp_path / "nope.h5")))


def _online() -> bool:
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_online(), reason="this machine can download ImageNet weights; the offline path is not taken")
def test_imagenet_offline_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cache = imagenet_cache_file("EfficientNetB0")
    assert cache == tmp_path / "models" / "efficientnetb0_notop.h5"
    with pytest.raises(WeightsError) as info:
        build_backbone(tiny_params(weights="imagenet", weights_fallback="stop"))
    for fragment in ("train.weights=imagenet", str(cache), "train.weights_fallback: random"):
        assert fragment in str(info.value)
    _, used = build_backbone(tiny_params(weights="imagenet", weights_fallback="random"))
    assert used.used == "random" and used.requested == "imagenet" and str(cache) in used.fallback_reason


def test_lite_imagenet_weights_come_from_the_locked_package_with_their_provenance() -> None:
    from visionops.training.weights import PACKAGED

    backbone, used = build_backbone(tiny_params(model="EfficientNetLite0", weights="imagenet"))
    package = PACKAGED["EfficientNetLite0"]
    assert (used.used, used.package, used.package_version) == ("imagenet", package.package, "0.1.0")
    assert used.sha256 == package.sha256 and used.format.startswith("PyTorch")
    assert used.path == f"{package.module}/{package.file}", "inside the package: the same record on every machine"
    assert "Apache-2.0" in used.licence and used.pretrained
    stem = backbone.get_layer("stem_conv").kernel.numpy()
    assert stem.shape == (3, 3, 3, 32) and np.abs(stem).max() > 1.0  # ImageNet filters, not the initialiser's ±0.5


def test_a_lite_package_file_that_is_not_the_locked_one_is_never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from visionops.training import weights

    changed = dataclasses.replace(weights.PACKAGED["EfficientNetLite0"], sha256="0" * 64)
    monkeypatch.setitem(weights.PACKAGED, "EfficientNetLite0", changed)
    monkeypatch.setattr(weights, "read_state_dict", lambda path: pytest.fail(f"{path} was read"))
    with pytest.raises(WeightsError, match=r"has sha256 5793442.*not the locked 0000"):
        build_backbone(tiny_params(model="EfficientNetLite0", weights="imagenet"))
    _, used = build_backbone(tiny_params(model="EfficientNetLite0", weights="imagenet", weights_fallback="random"))
    assert used.used == "random" and "not the locked" in used.fallback_reason


def test_a_lite_checkpoint_file_is_read_safely(tmp_path: Path) -> None:
    import os

    from torch_files import Planted, write_legacy

    from visionops.training.torch_checkpoint import CheckpointError

    crafted = write_legacy(tmp_path / "lite.pth", {"x": Planted(os.system, "true")})
    with pytest.raises(CheckpointError, match="refused to load"):
        build_backbone(tiny_params(model="EfficientNetLite0", weights=str(crafted)))
