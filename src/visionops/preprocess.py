"""Image bytes → model input: the one preprocessing of train, evaluate, predict, export and the served model.

Decode (EXIF orientation applied; grey, RGBA, 16-bit and CMYK become 8-bit RGB), take the centre square resized
to ``resize_side``, then its centred ``image_size`` window: float32 RGB in 0–255 (Keras EfficientNet rescales
its own input). Training caches the ``resize_side`` squares and crops them at random instead of in the centre.

Only OpenCV and NumPy: the served model imports this module without TensorFlow's training stack.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def decode_rgb(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an 8-bit RGB array, honouring EXIF orientation.

    Raises:
        ValueError: OpenCV cannot decode the bytes; the message names ``source``.
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # any depth/channels → 8-bit BGR
    if image is None:
        raise ValueError(f"{source}: not a decodable image (OpenCV cannot read it: empty, truncated or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def square(image: np.ndarray, side: int) -> np.ndarray:
    """The centre square of an (H, W, 3) image, resized to ``side``×``side``."""
    h, w = image.shape[:2]
    scale = side / min(h, w)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (max(side, round(w * scale)), max(side, round(h * scale))), interpolation=interpolation)
    return center_crop(image, side)


def load_square(path: Path, side: int) -> np.ndarray:
    """Read an image file and return its centre square resized to ``side``×``side`` (RGB uint8)."""
    return square(decode_rgb(Path(path).read_bytes(), str(path)), side)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size``×``size`` window of an (H, W, C) image at least that large."""
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def model_input(data: bytes, resize_side: int, image_size: int, source: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes → the (image_size, image_size, 3) float32 array in 0–255 the model takes.

    Raises:
        ValueError: the bytes are not a decodable image; the message names ``source``.
    """
    return center_crop(square(decode_rgb(data, source), resize_side), image_size).astype(np.float32)
