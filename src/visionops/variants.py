"""The EfficientNet variants ``train.model`` accepts, and the input side each was published at."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

VARIANT_SIZES = {
    "EfficientNetB0": 224,
    "EfficientNetB1": 240,
    "EfficientNetB2": 260,
    "EfficientNetB3": 300,
    "EfficientNetB4": 380,
    "EfficientNetB5": 456,
    "EfficientNetB6": 528,
    "EfficientNetB7": 600,
    "EfficientNetV2B0": 224,
    "EfficientNetV2B1": 240,
    "EfficientNetV2B2": 260,
    "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384,
    "EfficientNetV2M": 480,
    "EfficientNetV2L": 480,
    "EfficientNetLite0": 224,
    "EfficientNetLite1": 240,
    "EfficientNetLite2": 260,
}
if TYPE_CHECKING:  # (a Literal built from the table, one list to maintain, is beyond a static checker)
    Variant = str
else:
    Variant = Literal[tuple(VARIANT_SIZES)]
# Keras builds EfficientNet at any side >= 32, but every variant's published size is a multiple of 4 (224, 240,
# 260, 300, 380, 456, 528, 600, 384, 480): the stem and first stride-2 stage then divide evenly, with no
# one-sided 'same' padding at the highest resolution. Other values are almost always typos (225, 299).
SIZE_STEP = 4
