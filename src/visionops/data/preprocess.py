"""Image bytes → model input: the one preprocessing of train, evaluate, predict, export and the served model.

Decode (EXIF orientation applied; grey, RGBA, 16-bit and CMYK become 8-bit RGB), take the centre square resized
to ``resize_side``, then its centred ``image_size`` window: float32 RGB in 0–255 (Keras EfficientNet rescales
its own input). Training caches the ``resize_side`` squares and crops them at random instead of in the centre.

A JPEG whose short side is at least 2, 4 or 8 times ``resize_side`` is decoded at 1/2, 1/4 or 1/8 of its size (the
largest that fits: libjpeg's DCT scaling skips most of the inverse DCT, colour conversion and resizing) and then
resized over the same extent of the picture as a full decode would be. Its pixels differ a little from a full decode
+ INTER_AREA: the mean absolute difference (0–255) per image averaged 1.3, 2.0 and 2.6 at 1/2, 1/4 and 1/8 over
shared/datasets/clothing (2.2, 2.4, 3.3 over flowers), 10.7 for the worst image (a polka-dot dress at 1/8, dots near
the output's pixel size); the tests hold generated photos in every EXIF orientation to below 3. Every other image,
and any JPEG whose header this module cannot read, is decoded whole, exactly as before.

Train/serve skew: the training and evaluation cache (:func:`load_square`) and predict, export and the served model
(:func:`model_input`) all go through :func:`decode_square`, so the same bytes give the same pixels everywhere,
reduced or not. A model trained before reduced decoding existed is served pixels within that tolerance of what it
learnt from; :data:`PIXELS_VERSION` names the disk caches, so none made by older code is reused.

Only OpenCV and NumPy: the served model imports this module without TensorFlow's training stack (or Pillow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np

PIXELS_VERSION = 2  # of what decode_square makes: part of the disk cache's name, so bump it when they change
_REDUCED = {  # 1/n scale → imdecode's flag
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (the others are tables)
# EXIF orientations after which the stored bottom rows / right columns (a partial last block) come first.
_SWAPPED, _BOTTOM_FIRST, _RIGHT_FIRST = {5, 6, 7, 8}, {3, 4, 7, 8}, {2, 3, 6, 7}


def decode_rgb(data: bytes, source: str = "<bytes>", reduction: int = 1) -> np.ndarray:
    """Decode image bytes to an 8-bit RGB array, honouring EXIF orientation.

    Args:
        data: the encoded image.
        source: names the image in the error.
        reduction: 2, 4 or 8 decodes a JPEG at that fraction of its size (⌈side / reduction⌉ pixels).

    Raises:
        ValueError: OpenCV cannot decode the bytes; the message names ``source``.
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[reduction])  # any depth/channels → 8-bit BGR
    if image is None:
        raise ValueError(f"{source}: not a decodable image (OpenCV cannot read it: empty, truncated or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _resized(image: np.ndarray, side: int, extent: tuple[float, float] | None = None) -> np.ndarray:
    """An (H, W, 3) image resized so that its short side is ``side``.

    Args:
        image: the pixels.
        side: the short side wanted.
        extent: the (height, width) in pixels that the picture covers, when less than the array: a JPEG decoded at
            1/n has ⌈h/n⌉ rows for h/n rows of picture (its last row partly padding), cut off here after resizing.
    """
    h, w = extent or image.shape[:2]
    scale = side / min(h, w)
    width, height = max(side, round(w * scale)), max(side, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    # Scale factors, not a size: the picture's extent maps onto (height, width), whatever padding follows it.
    return cv2.resize(image, None, fx=width / w, fy=height / h, interpolation=interpolation)[:height, :width]


def square(image: np.ndarray, side: int) -> np.ndarray:
    """The centre square of an (H, W, 3) image, resized to ``side``×``side``."""
    return center_crop(_resized(image, side), side)


def decode_square(data: bytes, side: int, source: str = "<bytes>") -> np.ndarray:
    """Encoded image → its centre square resized to ``side``×``side`` (RGB uint8); large JPEGs decoded reduced.

    Raises:
        ValueError: the bytes are not a decodable image; the message names ``source``.
    """
    header = _jpeg_header(data)
    if header is None or min(header[:2]) < 2 * side:  # not a JPEG, or too small to decode reduced
        return square(decode_rgb(data, source), side)
    height, width, orientation = header
    n = max(n for n in _REDUCED if min(height, width) >= side * n)
    if orientation in _SWAPPED:
        height, width = width, height
    image = decode_rgb(data, source, n)
    if image.shape[:2] != (-(-height // n), -(-width // n)):  # OpenCV read the header otherwise: decode it whole
        return square(decode_rgb(data, source), side)
    # Put the partial last block where _resized() cuts it off (bottom, right), and back before the centre crop.
    flip = (
        slice(None, None, -1 if orientation in _BOTTOM_FIRST else 1),
        slice(None, None, -1 if orientation in _RIGHT_FIRST else 1),
    )
    return center_crop(_resized(image[flip], side, (height / n, width / n))[flip], side)


def load_square(path: Path, side: int) -> np.ndarray:
    """Read an image file and return its centre square resized to ``side``×``side`` (RGB uint8)."""
    return decode_square(Path(path).read_bytes(), side, str(path))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size``×``size`` window of an (H, W, C) image at least that large."""
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def model_input(data: bytes, resize_side: int, image_size: int, *, source: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes → the (image_size, image_size, 3) float32 array in 0–255 the model takes.

    Raises:
        ValueError: the bytes are not a decodable image; the message names ``source``.
    """
    return center_crop(decode_square(data, resize_side, source), image_size).astype(np.float32)


def _jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, EXIF orientation) as stored in a JPEG's markers, or None for anything else.

    A few microseconds, without decoding: Pillow's header read takes 60–150 and holds the GIL.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    orientation, at = 1, 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte before the marker
            at += 1
            continue
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in _SOF:
            return (
                int.from_bytes(data[at + 5 : at + 7], "big"),
                int.from_bytes(data[at + 7 : at + 9], "big"),
                orientation,
            )
        if marker == 0xE1 and data[at + 4 : at + 10] == b"Exif\0\0":
            orientation = _exif_orientation(data[at + 10 : end])
        at = end
    return None


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag (0x0112) of an EXIF block's first IFD; 1 when absent."""
    if tiff[:2] not in (b"II", b"MM"):
        return 1
    order: Literal["little", "big"] = "little" if tiff[:2] == b"II" else "big"

    def number(at: int, size: int) -> int:
        return int.from_bytes(tiff[at : at + size], order)

    first = number(4, 4)
    for entry in range(first + 2, min(len(tiff), first + 2 + 12 * number(first, 2)), 12):
        if number(entry, 2) == 0x0112:
            return number(entry + 8, 2)
    return 1
