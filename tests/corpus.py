"""Generators of good and bad image files, shared by the data, e2e and reliability tests.

Every kind is made here by code (no binary fixtures), so a reader sees exactly what each file is.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from visionops.data.sample import SHAPES, render_scene


def good_jpeg(seed: int, size: int = 48, shape: str = "circle") -> bytes:
    """A valid, distinct RGB JPEG (a sample scene)."""
    img = render_scene(shape, size, np.random.default_rng([seed, list(SHAPES).index(shape)]))
    return cv2.imencode(".jpg", img)[1].tobytes()


def _pil(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _rgb(seed: int, w: int = 48, h: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bomb_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose IHDR claims ``width``×``height`` pixels: a decompression-bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _oriented_jpeg(pixels: np.ndarray, orientation: int, **kwargs) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _pil(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), **kwargs)


def exif_rotated_jpeg(w: int = 64, h: int = 40) -> bytes:
    """A ``w``×``h`` JPEG whose EXIF orientation (6) says: rotate 90° to display, i.e. it is ``h``×``w`` upright."""
    return _oriented_jpeg(_rgb(7, w, h), 6)


def photo_jpeg(w: int, h: int, seed: int = 0, orientation: int = 1) -> bytes:
    """A photo-like JPEG (quality 90) stored ``w``×``h`` with EXIF ``orientation``.

    Smooth colour fields, sharp-edged anti-aliased discs and sensor-like noise: neither flat like a drawing nor
    noise from edge to edge.
    """
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        center = (int(rng.integers(w)), int(rng.integers(h)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, center, int(rng.integers(4, max(w, h) // 4)), color, -1, cv2.LINE_AA)
    noisy = image + rng.normal(0, 6, image.shape)
    return _oriented_jpeg(np.clip(noisy, 0, 255).astype(np.uint8), orientation, quality=90)


# name → (relative path under data/, bytes maker, expected status, expected reason code or None)
BAD_KINDS: dict[str, tuple[str, Callable[[], bytes], str, str | None]] = {
    "zero_byte": ("cat/empty.jpg", lambda: b"", "quarantined", "empty_file"),
    "truncated_jpeg": ("cat/truncated.jpg", lambda: good_jpeg(1)[: len(good_jpeg(1)) // 2], "quarantined", "corrupt"),
    "text_as_jpg": ("cat/notes.jpg", lambda: b"this is not an image\n", "quarantined", "not_an_image"),
    "png_named_jpg": ("cat/really_png.jpg", lambda: _pil(Image.fromarray(_rgb(2)), "PNG"), "ok", None),
    "grayscale": ("cat/gray.png", lambda: _pil(Image.fromarray(_rgb(3)[..., 0]), "PNG"), "ok", None),
    "rgba": ("cat/rgba.png", lambda: _pil(Image.fromarray(_rgb(4)).convert("RGBA"), "PNG"), "ok", None),
    "png_16bit": (
        "cat/deep.png",
        lambda: cv2.imencode(".png", (_rgb(5)[..., 0].astype(np.uint16) * 257))[1].tobytes(),
        "ok",
        None,
    ),
    "cmyk_jpeg": ("cat/cmyk.jpg", lambda: _pil(Image.fromarray(_rgb(6)).convert("CMYK"), "JPEG"), "ok", None),
    "exif_rotated": ("cat/rotated.jpg", exif_rotated_jpeg, "ok", None),
    "one_pixel": ("cat/tiny.png", lambda: _pil(Image.new("RGB", (1, 1), "red"), "PNG"), "quarantined", "too_small"),
    "bomb_header": ("cat/bomb.png", png_bomb_header, "quarantined", "too_many_pixels"),
    "unicode_space_name": ("cat/ünï cødé 猫 1.jpg", lambda: good_jpeg(8), "ok", None),
    "nested_subfolder": ("cat/2024/summer/deep.jpg", lambda: good_jpeg(9), "ok", None),
    "gif_not_allowed": (
        "cat/anim.gif",
        lambda: _pil(Image.fromarray(_rgb(10)), "GIF"),
        "quarantined",
        "format_not_allowed",
    ),
    "root_level_file": ("loose.jpg", lambda: good_jpeg(11), "quarantined", "not_in_class_folder"),
    "ds_store": ("cat/.DS_Store", lambda: b"\0\0\0\1Bud1", "ignored", None),
}


def animated(fmt: str, frames: int = 3) -> bytes:
    """A multi-frame (animated) image in ``fmt`` (WEBP, PNG as APNG, GIF): frames of different colours."""
    images = [Image.new("RGB", (48, 48), colour) for colour in ("red", "green", "blue")[:frames]]
    return _pil(images[0], fmt, save_all=True, append_images=images[1:])


def corrupt_png() -> bytes:
    """A PNG whose compressed pixel data was overwritten: the header is fine, decoding fails."""
    gradient = np.tile(np.arange(64, dtype=np.uint8), (64, 1))  # compressible: random pixels get stored raw
    data = bytearray(_pil(Image.fromarray(gradient), "PNG"))
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 : at + 4 + length] = b"\xff" * length  # not zlib any more; chunk length unchanged
    return bytes(data)


# More kinds in the same shape as BAD_KINDS, used by tests/reliability/test_bad_inputs.py.
MORE_KINDS: dict[str, tuple[str, Callable[[], bytes], str, str | None]] = {
    "animated_webp": ("cat/anim.webp", lambda: animated("WEBP"), "quarantined", "animated"),
    "animated_png": ("cat/anim_apng.png", lambda: animated("PNG"), "quarantined", "animated"),
    "upper_case_ext": ("cat/UPPER.JPG", lambda: good_jpeg(13), "ok", None),
    "mixed_case_ext": ("cat/Mixed.Png", lambda: _pil(Image.fromarray(_rgb(14)), "PNG"), "ok", None),
    "class_folder_is_file": ("horse", lambda: good_jpeg(15), "quarantined", "not_in_class_folder"),
    "corrupt_png": ("cat/corrupt.png", corrupt_png, "quarantined", "corrupt"),
    "jpeg_header_only": ("cat/header_only.jpg", lambda: good_jpeg(16)[:200], "quarantined", "corrupt"),
    "elongated": (
        "cat/strip.png",
        lambda: _pil(Image.new("RGB", (2000, 8), "blue"), "PNG"),
        "quarantined",
        "too_small",
    ),
    "tiff_not_allowed": (
        "cat/scan.tif",
        lambda: _pil(Image.fromarray(_rgb(17)), "TIFF"),
        "quarantined",
        "format_not_allowed",
    ),
    "html_as_png": (
        "cat/page.png",
        lambda: b"<!doctype html><html><body>404</body></html>",
        "quarantined",
        "not_an_image",
    ),
    "hidden_dot_file": ("cat/.secret.jpg", lambda: good_jpeg(18), "ignored", None),
}


def write(root: Path, rel: str, data: bytes) -> Path:
    """Write ``data`` at ``root/rel``, creating folders."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good_class(root: Path, label: str, n: int, start: int = 0, size: int = 48) -> list[Path]:
    """Write ``n`` distinct valid JPEGs into ``root/label/``."""
    shape = list(SHAPES)[sum(map(ord, label)) % len(SHAPES)]
    return [write(root, f"{label}/img_{i:03d}.jpg", good_jpeg(1000 + i, size, shape)) for i in range(start, start + n)]


def tree_hash(root: Path) -> str:
    """One SHA-256 over :func:`tree_digest`: paths, bytes and symlink targets of everything under ``root``."""
    import hashlib

    digest = hashlib.sha256()
    for rel, content in tree_digest(root).items():
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def tree_digest(root: Path) -> dict[str, bytes]:
    """Every entry under ``root`` (symlinks as their target, not followed) → its content, to prove nothing changed."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            state[rel] = b"-> " + str(path.readlink()).encode()
        elif path.is_file():
            state[rel] = path.read_bytes()
        else:
            state[rel] = b"<dir>"
    return state
