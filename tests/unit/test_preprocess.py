"""Decoding: 8-bit RGB from any input, EXIF orientation, and JPEGs decoded at reduced scale (DCT scaling).

Reduced decoding is held to the full decode it replaces, written out below as it was before reduced decoding
existed: identical pixels where no reduction applies, a mean absolute difference below TOLERANCE where one does.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from corpus import BAD_KINDS, exif_rotated_jpeg, photo_jpeg

from visionops.data import preprocess
from visionops.data.preprocess import center_crop, decode_rgb, decode_square

TOLERANCE = 3.0  # mean absolute difference (0–255) from full decode + INTER_AREA; preprocess's docstring states it


def full_decode(data: bytes, side: int) -> np.ndarray:
    """The centre square as decode_square made it before reduced decoding: full decode, resize, crop."""
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    return center_crop(cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), side)


def photo_png(w: int, h: int) -> bytes:
    """The photo's pixels as a PNG: never decoded reduced, however large."""
    pixels = cv2.imdecode(np.frombuffer(photo_jpeg(w, h), np.uint8), cv2.IMREAD_COLOR)
    return cv2.imencode(".png", pixels)[1].tobytes()


@pytest.mark.parametrize("kind", ["grayscale", "rgba", "png_16bit", "cmyk_jpeg", "png_named_jpg"])
def test_decodes_to_8bit_rgb(kind: str) -> None:
    image = decode_rgb(BAD_KINDS[kind][1]())
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@pytest.mark.parametrize("reduction", [1, 2, 4, 8])
def test_exif_orientation_is_applied_at_every_scale(reduction: int) -> None:
    shown = (-(-64 // reduction), -(-40 // reduction))  # stored 64 wide, shown 40 wide; libjpeg rounds up
    assert decode_rgb(exif_rotated_jpeg(64, 40), reduction=reduction).shape[:2] == shown


@pytest.mark.parametrize("data", [b"not an image", photo_jpeg(640, 480)[:400]], ids=["text", "jpeg_header_only"])
def test_undecodable_names_the_source(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"broken\.jpg: not a decodable image"):
        decode_square(data, 40, "broken.jpg")


@pytest.mark.parametrize(
    ("data", "side"),
    [
        (photo_jpeg(333, 250), 200),  # short side under 2 × 200: no reduction
        (photo_jpeg(333, 250, orientation=6), 126),  # 250 < 2 × 126
        (photo_png(640, 480), 60),
        (photo_jpeg(48, 40), 64),  # smaller than the side: enlarged
    ],
    ids=["jpeg", "jpeg_rotated", "png", "small_jpeg"],
)
def test_unreduced_pixels_are_unchanged(data: bytes, side: int) -> None:
    assert np.array_equal(decode_square(data, side), full_decode(data, side))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("side", [120, 60, 30])  # 1/2, 1/4, 1/8 of 333×250, neither side a multiple of 8
def test_reduced_decoding_is_within_tolerance(side: int, orientation: int) -> None:
    """Each EXIF orientation moves the partial last block to another edge; the picture stays aligned all the same."""
    data = photo_jpeg(333, 250, seed=orientation, orientation=orientation)
    reduced, full = decode_square(data, side), full_decode(data, side)
    assert reduced.shape == full.shape == (side, side, 3)
    assert not np.array_equal(reduced, full), "decoded reduced"
    assert np.abs(reduced.astype(np.int16) - full).mean() < TOLERANCE


def test_a_misread_header_costs_time_not_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where OpenCV's reduced decode disagrees with the header read, the image is decoded whole."""
    data = photo_jpeg(333, 250)
    monkeypatch.setattr(preprocess, "_jpeg_header", lambda _: (500, 666, 1))  # twice the real size
    assert np.array_equal(decode_square(data, 120), full_decode(data, 120))
