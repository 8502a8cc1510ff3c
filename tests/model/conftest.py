"""Model fixtures: tiny EfficientNet-B0 models (32 px) built once per module, no download."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
from helpers import SIZE


@pytest.fixture(scope="session")
def pretrained_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local 'pretrained' weights file: a B0 backbone whose BatchNormalization statistics are not the defaults.

    It stands in for ImageNet weights (which cannot be downloaded here) through the real local-file path.
    """
    backbone = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3), pooling="avg"
    )
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(layer.moving_mean + 0.1)
    path = tmp_path_factory.mktemp("weights") / "b0_notop.weights.h5"
    backbone.save_weights(path)
    return path
