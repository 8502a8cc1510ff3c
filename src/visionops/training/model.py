"""The classifier around an EfficientNet backbone (:mod:`visionops.training.weights`): head, freeze policy, loading."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import keras

from visionops.contracts.model import ModelInfo, model_file
from visionops.errors import UserError
from visionops.interfaces import check_model_file, check_outputs

log = logging.getLogger(__name__)
SCRATCH_BN_MOMENTUM = 0.9


class UnsafeModelError(UserError, ValueError):
    """A model file carries code (a Lambda layer) and Keras safe_mode refuses it; the CLI shows the message."""


def batchnorm_frozen(policy: str, pretrained: bool) -> bool:
    """Resolve ``train.finetune.batchnorm``: 'auto' freezes BatchNormalization only over pretrained weights."""
    return policy == "frozen" or (policy == "auto" and pretrained)


def build_model(
    backbone: keras.Model, num_classes: int, dropout: float, *, freeze_batchnorm: bool = True
) -> keras.Model:
    """Backbone + dropout + softmax head.

    With ``freeze_batchnorm`` the backbone is called in inference mode, so BatchNormalization keeps its
    pretrained statistics even when its block is unfrozen (the Keras fine-tuning recipe). The softmax output
    is float32 even under mixed precision, for a numerically stable loss.
    """
    if not freeze_batchnorm:
        # Keras' default momentum (0.99) needs ~500 steps before the moving statistics used at evaluation
        # mean anything; a short run from scratch has fewer, so it would validate on garbage statistics.
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    inputs = keras.Input(backbone.input_shape[1:], name="image")  # float 0–255: the backbone rescales itself
    features = backbone(inputs, training=False) if freeze_batchnorm else backbone(inputs)
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(features)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_classifier")


def block_ids(backbone: keras.Model) -> list[str]:
    """The backbone's block ids in order (``block1`` … ``block7``), read from its layer names."""
    ids = []
    for layer in backbone.layers:
        match = re.match(r"(block\d+)", layer.name)
        if match and match.group(1) not in ids:
            ids.append(match.group(1))
    return ids


def freeze_for_stage(
    model: keras.Model, stage: int, unfreeze_blocks: int | str = "all", *, freeze_batchnorm: bool = True
) -> None:
    """Set trainable flags for fine-tuning stage 1 (head only) or 2 (top blocks and head).

    In stage 2 the top ``unfreeze_blocks`` blocks (and the final conv) train; with ``freeze_batchnorm`` every
    BatchNormalization layer stays frozen, since small batches would wreck pretrained statistics.
    Recompile after calling this.
    """
    backbone = model.layers[1]
    if stage == 1:
        backbone.trainable = False
        return
    backbone.trainable = True
    ids = block_ids(backbone)
    keep = set(ids) if unfreeze_blocks == "all" else set(ids[-int(unfreeze_blocks) :])
    for layer in backbone.layers:
        match = re.match(r"(block\d+)", layer.name)
        in_top = layer.name.startswith("top_") or (match is not None and match.group(1) in keep)
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = (unfreeze_blocks == "all" or in_top) and not (is_bn and freeze_batchnorm)


def load_model(path: Path) -> keras.Model:
    """Load a saved model with Keras safe_mode: a file carrying code (Lambda layers) is refused.

    Raises:
        UnsafeModelError: the file holds arbitrary code; the message says why it is refused.
        DamagedModelError: the file is truncated or changed (:func:`visionops.interfaces.check_model_file`).
    """
    check_model_file(path)
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as err:
        if "safe_mode" in str(err) or "Lambda" in str(err):
            raise UnsafeModelError(
                f"{path}: refused to load, it carries Python code (a Lambda layer) that could run anything. "
                "Only load models you trust, re-saved without Lambda layers."
            ) from None
        raise


def load_trained(model: Path, info: ModelInfo | None = None) -> tuple[keras.Model, ModelInfo]:
    """A trained model and its class names, task and input size, checked against each other.

    Args:
        model: model.keras, or the train stage's folder holding it (a registered model is made local first:
            :func:`visionops.tracking.registry.local_model`).
        info: its :class:`ModelInfo` when known (a registered model's metadata); None reads classes.json beside it.

    Raises:
        FileNotFoundError: no model file, or no classes.json beside it.
        ClassMismatchError: the model's outputs or input size disagree with the class list stored with it.
        UnsafeModelError: the file carries code (see :func:`load_model`).
        DamagedModelError: the file is truncated or its bytes changed (see :func:`load_model`).
    """
    model = Path(model)
    path = model_file(model) if model.is_dir() else model
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file; train one with `dvc repro train`")
    info = info or ModelInfo.read(path.parent)
    loaded = load_model(path)
    check_outputs(loaded.output_shape[-1], loaded.input_shape[1], info, source=str(model))
    return loaded, info
