"""Inspect one image file without trusting its name: content format, size, channels, hash, decodability.

The header is read first and the pixel count checked against the limit *before* any decoding, so a
decompression bomb (a tiny file whose header claims a huge image) is rejected without allocating it.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from visionops.files import is_hidden, is_inside, sha256_bytes

# Our own max_pixels check (below) runs on the header before any decode; PIL's global guard would
# otherwise raise on open for large-but-allowed images and hide the header facts we want to report.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_CHANNELS = {
    "1": 1,
    "L": 1,
    "P": 3,
    "PA": 4,
    "LA": 2,
    "La": 2,
    "RGB": 3,
    "RGBA": 4,
    "RGBa": 4,
    "CMYK": 4,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
    "I": 1,
    "F": 1,
}
_BITS = {"1": 1, "I": 32, "F": 32}
_ROTATED_EXIF = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXTENSIONS = {
    "JPEG": ("jpg", "jpeg", "jpe", "jfif"),
    "PNG": ("png",),
    "BMP": ("bmp", "dib"),
    "WEBP": ("webp",),
    "TIFF": ("tif", "tiff"),
    "GIF": ("gif",),
}


class _Animated(Exception):
    """Raised inside the probe for a multi-frame image; becomes the file's ``animated`` quarantine reason."""


@dataclass
class FileFacts:
    """One manifest row as the probe sees it (status and reason are decided later by the GE suite)."""

    path: str
    label: str | None
    bytes: int | None = None
    sha256: str | None = None
    md5: str | None = None  # what DVC names objects by: compared with data.dvc's listing (visionops.data.dvccache)
    format: str | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    mode: str | None = None
    bit_depth: int | None = None
    exif_orientation: int | None = None
    note: str | None = None
    error: str | None = None  # "code: what and how to fix"
    ignored: str | None = None

    def as_row(self) -> dict:
        """Return the facts as a plain dict (one DataFrame row)."""
        return dict(vars(self))  # every field is a scalar: asdict's deep copy would cost 30 µs a file


def shown(rel: Path) -> str:
    """``rel`` as manifest text: a name that is not valid UTF-8 gets ``\\xNN`` escapes, so the CSV can hold it."""
    return os.fsencode(rel.as_posix()).decode("utf-8", "backslashreplace")


def utf8_name(rel: Path) -> bool:
    """False for a file or folder name holding bytes that are not UTF-8 (e.g. Latin-1 names from old archives)."""
    try:
        rel.as_posix().encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def probe_file(path: Path, root: Path, max_pixels: int) -> FileFacts:
    """Read ``path`` (a file under ``root``) and return what it really is.

    Never raises for a bad file: every problem becomes ``error`` (unusable) or ``ignored`` (not data).

    Args:
        path: the file, under ``root`` as :func:`visionops.stages.validate.list_files` finds it (no symlinked folder on
            the way: only the file itself may be a link).
        root: the data folder; a symlink resolving outside it is never read.
        max_pixels: images whose header claims more pixels are not decoded.
    """
    rel = path.relative_to(root)
    facts = FileFacts(path=shown(rel), label=shown(Path(rel.parts[0])) if len(rel.parts) > 1 else None)
    if is_hidden(rel):
        facts.ignored = "hidden or system file"
        return facts
    if not facts.label:
        facts.error = (
            f"not_in_class_folder: data/{facts.path} is a file, not a class folder; move it into data/<class>/"
        )
        return facts
    if not utf8_name(rel):
        facts.error = "bad_filename: the name is not valid UTF-8 (shown with \\x escapes); rename it, e.g. convmv"
        return facts
    # list_files never enters a symlinked folder, so only a symlinked file can lead out (one lstat, not a realpath).
    if path.is_symlink():
        if not is_inside(path, root):
            facts.error = f"symlink_outside_data: points to {os.readlink(path)}; not read. Copy the file into data/"
            return facts
        if not path.exists():
            facts.error = f"broken_symlink: points to {os.readlink(path)}, which does not exist; fix or remove the link"
            return facts
    try:
        data = path.read_bytes()
    except OSError as err:
        facts.error = f"unreadable: {err.strerror or err}; check its permissions"
        return facts
    facts.bytes, facts.sha256 = len(data), sha256_bytes(data)
    facts.md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if not data:
        facts.error = "empty_file: 0 bytes; replace or remove it"
        return facts
    try:
        _inspect(io.BytesIO(data), facts, max_pixels)
    except UnidentifiedImageError:
        facts.error = "not_an_image: the content is no known image format; remove it from data/"
    except _Animated as err:
        facts.error = str(err)
    except Exception as err:  # noqa: BLE001 - any decoder failure means the file is unusable
        facts.error = f"corrupt: cannot decode ({err}); re-export or remove it"
    if facts.format and path.suffix.lower().lstrip(".") not in _EXTENSIONS.get(facts.format, ()):
        facts.note = f"content is {facts.format} but the name ends in '{path.suffix}'"
    return facts


def _inspect(stream: io.BytesIO, facts: FileFacts, max_pixels: int) -> None:
    with Image.open(stream) as im:
        facts.format, facts.mode = im.format, im.mode
        width, height = im.size
        has_alpha = im.mode == "P" and "transparency" in im.info
        facts.channels = 4 if has_alpha else _CHANNELS.get(im.mode, len(im.getbands()))
        facts.bit_depth = 16 if im.mode.startswith("I;16") else _BITS.get(im.mode, 8)
        facts.width, facts.height = width, height
        if width * height > max_pixels:
            # Too many pixels: leave it undecoded (the suite quarantines it). Nothing below may run first:
            # Pillow decodes a whole PNG just to read its EXIF, and seeks through every frame to count them.
            return
        frames = getattr(im, "n_frames", 1)
        if frames > 1:  # training would silently see the first frame only: not what the label describes
            raise _Animated(f"animated: {frames} frames; export the one frame that shows the label as a still image")
        if im.format == "JPEG":
            # Decode at 1/8 scale: every entropy-coded byte is still read (truncation is caught), the
            # inverse DCT and colour conversion mostly skipped, several times faster.
            im.draft(None, (max(1, width // 8), max(1, height // 8)))
        im.load()  # before EXIF: a decoding error must surface here, not be swallowed with a broken EXIF block
        try:
            facts.exif_orientation = int(im.getexif().get(0x0112, 1))
        except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
            facts.exif_orientation = None
        if facts.exif_orientation in _ROTATED_EXIF:
            facts.width, facts.height = height, width
