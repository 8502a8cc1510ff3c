"""EfficientNet-Lite0/1/2 in Keras (public layers only) and their ImageNet weights from a PyTorch state dict.

EfficientNet-Lite (Google's ``efficientnet/lite`` builder) is EfficientNet-B0's topology made friendly to integer
hardware: no squeeze-and-excitation, ReLU6 instead of swish, the stem (32 filters) and head (1280) never scaled, and
the first and last stages never repeated more. Its convolutions pad as TensorFlow's "same" does (more after than
before when the total is odd), which Keras' ``padding="same"`` is at every input size; its BatchNormalization uses
epsilon 1e-3 and its input is ``(x - 127) / 128`` on RGB 0–255, a ``Rescaling`` layer here, so the model takes float
0–255 like every Keras EfficientNet.

Layer names follow ``keras.applications.EfficientNetB0`` (``stem_conv``, ``block2a_expand_conv``, ``top_bn``…), so
the freezing rules, which read block ids from names, treat both alike. Weights come from the PyTorch port's state
dict (``_conv_stem``, ``_blocks.N._expand_conv``…): convolutions OIHW → HWIO, depthwise (C, 1, H, W) → (H, W, C, 1),
the classifier transposed; every name is checked both ways (missing and unused) and every shape before assignment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from visionops.errors import UserError

# (width, depth, default input side, top dropout) of efficientnet_lite_builder.py
LITE_VARIANTS = {
    "EfficientNetLite0": (1.0, 1.0, 224, 0.2),
    "EfficientNetLite1": (1.0, 1.1, 240, 0.2),
    "EfficientNetLite2": (1.1, 1.2, 260, 0.3),
}
# (kernel, repeats, filters in, filters out, expansion, stride) of B0's seven stages, shared by every Lite variant
STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
STEM, HEAD, IMAGENET_CLASSES = 32, 1280, 1000
DROP_CONNECT = 0.2  # stochastic depth of the last block; earlier blocks drop proportionally less (as Keras' B0)
_KERNEL_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}


class WeightsMismatchError(UserError, ValueError):
    """A state dict does not fit the Lite variant: a key is missing or unused, or a shape differs (one line)."""


def round_filters(filters: int, width: float) -> int:
    """Filters scaled by ``width`` and rounded to a multiple of 8, never down by more than 10 % (the TF builder's)."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


@dataclass(frozen=True)
class Block:
    """One MBConv block: its Keras name prefix (``block2b_``) and shape."""

    prefix: str
    kernel: int
    filters_in: int
    filters_out: int
    expand: int
    stride: int


def blocks(variant: str) -> list[Block]:
    """The variant's blocks in order (the PyTorch port's ``_blocks.N`` is the N-th)."""
    width, depth, _, _ = LITE_VARIANTS[variant]
    found = []
    for i, (kernel, repeats, f_in, f_out, expand, stride) in enumerate(STAGES):
        first_or_last = i in (0, len(STAGES) - 1)
        repeats = repeats if first_or_last else math.ceil(depth * repeats)
        f_in = STEM if i == 0 else round_filters(f_in, width)
        f_out = round_filters(f_out, width)
        for j in range(repeats):
            found.append(
                Block(
                    f"block{i + 1}{chr(ord('a') + j)}_",
                    kernel,
                    f_in if j == 0 else f_out,
                    f_out,
                    expand,
                    stride if j == 0 else 1,
                )
            )
    return found


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, act: bool) -> keras.KerasTensor:
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=_KERNEL_INIT,
        name=f"{name}conv",
    )(x)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name=f"{name}bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}activation")(x) if act else x


def build_lite(variant: str, size: int, include_top: bool = False) -> keras.Model:
    """EfficientNet-Lite ``variant`` for ``size``-px RGB input in 0–255, randomly initialised.

    Args:
        variant: a key of :data:`LITE_VARIANTS`.
        size: the input side.
        include_top: end in ImageNet's 1000-class logits (dropout + dense, no softmax) instead of the pooled
            1280 features.
    """
    dropout = LITE_VARIANTS[variant][3]
    inputs = keras.Input((size, size, 3), name="input_layer")
    x = keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="rescaling")(inputs)
    x = _conv_bn(x, STEM, 3, 2, "stem_", act=True)
    found = blocks(variant)
    for index, b in enumerate(found):
        shortcut, p = x, b.prefix
        if b.expand != 1:
            x = _conv_bn(x, b.filters_in * b.expand, 1, 1, f"{p}expand_", act=True)
        x = keras.layers.DepthwiseConv2D(
            b.kernel,
            strides=b.stride,
            padding="same",
            use_bias=False,
            depthwise_initializer=_KERNEL_INIT,
            name=f"{p}dwconv",
        )(x)
        x = keras.layers.BatchNormalization(epsilon=1e-3, name=f"{p}bn")(x)
        x = keras.layers.ReLU(6.0, name=f"{p}activation")(x)
        x = _conv_bn(x, b.filters_out, 1, 1, f"{p}project_", act=False)
        if b.stride == 1 and b.filters_in == b.filters_out:
            rate = DROP_CONNECT * index / len(found)
            if rate > 0:
                x = keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{p}drop")(x)
            x = keras.layers.Add(name=f"{p}add")([x, shortcut])
    x = _conv_bn(x, round_filters(HEAD, 1.0), 1, 1, "top_", act=True)  # (the head is never scaled)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = keras.layers.Dropout(dropout, name="top_dropout")(x)
        x = keras.layers.Dense(IMAGENET_CLASSES, name="predictions")(x)
    return keras.Model(inputs, x, name=variant.lower())


def torch_names(variant: str, include_top: bool = False) -> dict[str, tuple[str, str]]:
    """Keras weight path (``layer/variable``) → (PyTorch key, layout) for every weight of :func:`build_lite`."""
    names: dict[str, tuple[str, str]] = {}

    def conv_bn(conv: str, bn: str, torch_conv: str, torch_bn: str, layout: str = "conv") -> None:
        names[f"{conv}/kernel"] = (f"{torch_conv}.weight", layout)
        for ours, theirs in (
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ):
            names[f"{bn}/{ours}"] = (f"{torch_bn}.{theirs}", "vector")

    conv_bn("stem_conv", "stem_bn", "_conv_stem", "_bn0")
    for n, b in enumerate(blocks(variant)):
        p, t = b.prefix, f"_blocks.{n}."
        if b.expand != 1:
            conv_bn(f"{p}expand_conv", f"{p}expand_bn", f"{t}_expand_conv", f"{t}_bn0")
        conv_bn(f"{p}dwconv", f"{p}bn", f"{t}_depthwise_conv", f"{t}_bn1", "depthwise")
        conv_bn(f"{p}project_conv", f"{p}project_bn", f"{t}_project_conv", f"{t}_bn2")
    conv_bn("top_conv", "top_bn", "_conv_head", "_bn1")
    if include_top:
        names["predictions/kernel"] = ("_fc.weight", "dense")
        names["predictions/bias"] = ("_fc.bias", "vector")
    return names


_LAYOUTS = {"conv": (2, 3, 1, 0), "depthwise": (2, 3, 0, 1), "dense": (1, 0), "vector": (0,)}


def assign_torch_weights(model: keras.Model, variant: str, state: dict[str, np.ndarray], *, source: str) -> None:
    """Load the PyTorch port's ``state`` into ``model`` (from :func:`build_lite`), every key and shape checked first.

    Raises:
        WeightsMismatchError: a key the model needs is missing, a key is left unused (``num_batches_tracked``, and
            the ImageNet classifier under a model without it, excepted), or a shape differs; one line naming the key.
    """
    include_top = any(layer.name == "predictions" for layer in model.layers)
    names = torch_names(variant, include_top)
    missing = [key for key, _ in names.values() if key not in state]
    if missing:
        raise WeightsMismatchError(
            f"{source}: {len(missing)} weights of {variant} are missing, first '{missing[0]}': it is not an "
            f"{variant} checkpoint in the EfficientNet-Lite PyTorch naming"
        )
    used = {key for key, _ in names.values()}
    unused = [
        k
        for k in state
        if k not in used and not k.endswith("num_batches_tracked") and not (k.startswith("_fc.") and not include_top)
    ]
    if unused:
        raise WeightsMismatchError(
            f"{source}: {len(unused)} entries fit no weight of {variant}, first '{unused[0]}': a checkpoint of another "
            "variant? Pick the train.model it was made for"
        )
    values = []
    for variable in model.weights:
        key, layout = names[variable.path]
        array = np.transpose(state[key], _LAYOUTS[layout]) if state[key].ndim > 1 else state[key]
        if tuple(array.shape) != tuple(variable.shape):
            raise WeightsMismatchError(
                f"{source}: '{key}' has shape {tuple(state[key].shape)}, which does not fit {variant}'s "
                f"{variable.path} {tuple(variable.shape)}: a checkpoint of another variant?"
            )
        values.append(array.astype(variable.dtype))
    for variable, value in zip(model.weights, values, strict=True):
        variable.assign(value)
