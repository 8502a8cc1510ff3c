"""Deterministic generator of the embedded sample dataset (``visionops sample-data``).

Each image is a small outdoor scene: a sky gradient above a ground band, a sun, and one large shape
standing on the ground. The shape names the class. Scenes are upright (sky on top), so the same images
also serve the orientation task. Every image is drawn from its own seeded generator, so asking for more
images per class adds files without changing the existing ones, and several processes can draw them.
The embedded sample is square (96 px); photo-sized scenes (e.g. 500×375) serve benchmarks/scaling.py.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from visionops.files import atomic_write_bytes

Draw = Callable[[np.ndarray, tuple[int, int], int, tuple[int, int, int], float], None]


def _polygon(img: np.ndarray, points: np.ndarray, color: tuple[int, int, int]) -> None:
    cv2.fillPoly(img, [np.round(points).astype(np.int32)], color, lineType=cv2.LINE_AA)


def _rotated(points: np.ndarray, center: tuple[int, int], angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rel = points - np.asarray(center, dtype=np.float64)
    return rel @ np.array([[c, s], [-s, c]]) + center


def _circle(img, center, radius, color, angle):
    cv2.circle(img, center, radius, color, thickness=-1, lineType=cv2.LINE_AA)


def _square(img, center, radius, color, angle):
    r = radius * 0.85
    square = np.array([[-r, -r], [r, -r], [r, r], [-r, r]]) + center
    _polygon(img, _rotated(square, center, angle), color)


def _triangle(img, center, radius, color, angle):
    tips = [np.pi / 2 + k * 2 * np.pi / 3 for k in range(3)]
    tri = np.array([[np.cos(t) * radius, -np.sin(t) * radius] for t in tips]) + center
    _polygon(img, _rotated(tri, center, angle), color)


def _star(img, center, radius, color, angle):
    pts = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        t = np.pi / 2 + k * np.pi / 5
        pts.append([np.cos(t) * r, -np.sin(t) * r])
    _polygon(img, _rotated(np.array(pts) + center, center, angle), color)


SHAPES: dict[str, Draw] = {"circle": _circle, "square": _square, "triangle": _triangle, "star": _star}


def render_scene(shape: str, size: int, rng: np.random.Generator, *, height: int | None = None) -> np.ndarray:
    """Draw one upright scene with ``shape`` on it: a BGR uint8 array ``size`` wide, ``height`` (or ``size``) high."""
    width, height = size, height or size
    short = min(width, height)  # sun and shape scale with it: the same draws as ever for squares (data.dvc's sample)
    img = np.empty((height, width, 3), dtype=np.uint8)
    horizon = int(height * rng.uniform(0.62, 0.78))
    sky_top, sky_low = rng.uniform([150, 60, 10], [255, 140, 60]), rng.uniform([220, 170, 120], [255, 230, 200])
    ramp = np.linspace(0.0, 1.0, horizon)[:, None]
    img[:horizon] = (sky_top * (1 - ramp) + sky_low * ramp)[:, None, :].astype(np.uint8)
    img[horizon:] = rng.uniform([20, 90, 20], [90, 170, 110]).astype(np.uint8)
    sun = (int(rng.uniform(0.1, 0.9) * width), int(rng.uniform(0.08, 0.25) * height))
    cv2.circle(img, sun, max(2, short // 12), (60, 220, 255), -1, lineType=cv2.LINE_AA)

    radius = int(short * rng.uniform(0.2, 0.3))
    center = (int(width * rng.uniform(0.35, 0.65)), horizon - int(radius * rng.uniform(0.6, 0.95)))
    red, green, blue = (int(v) for v in rng.integers(0, 256, 3))
    color = (red, green, blue)
    if max(color) - min(color) < 60:  # keep the shape from blending into sky or ground
        color = (int(rng.integers(0, 80)), int(rng.integers(0, 80)), int(rng.integers(150, 256)))
    SHAPES[shape](img, center, radius, color, float(rng.uniform(-0.25, 0.25)))

    noise = rng.normal(0.0, 6.0, img.shape)
    return np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _write_scene(job: tuple[int, str, int], out_dir: Path, size: int, height: int | None, seed: int) -> Path:
    """Render and write image ``i`` of class ``shape`` (``job`` = class index, shape, i); its path."""
    class_index, shape, i = job
    rng = np.random.default_rng([seed, class_index, i])
    ok, encoded = cv2.imencode(".jpg", render_scene(shape, size, rng, height=height), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok, "OpenCV failed to encode a JPEG"
    path = out_dir / shape / f"{shape}_{i:04d}.jpg"
    atomic_write_bytes(path, encoded.tobytes())
    return path


def generate_sample(
    out_dir: Path, per_class: int = 200, size: int = 96, *, seed: int = 0, height: int | None = None, workers: int = 1
) -> list[Path]:
    """Write ``per_class`` JPEG scenes for each shape class into ``out_dir/<class>/``.

    Args:
        out_dir: destination folder; must be missing or empty, so no user file is ever overwritten.
        per_class: images per class.
        size: width of the images, in pixels (and their height, unless ``height`` is given).
        seed: base seed; the same arguments always give byte-identical files.
        height: height of the images, in pixels; None draws squares.
        workers: processes drawing the images (the files do not depend on it).

    Returns:
        The written paths, sorted.

    Raises:
        FileExistsError: ``out_dir`` already holds files.
        ValueError: an argument is out of range.
    """
    if per_class < 1 or size < 16 or (height is not None and height < 16) or workers < 1:
        raise ValueError(
            "per_class and workers must be >= 1, size and height >= 16 "
            f"(got per_class={per_class}, size={size}, height={height}, workers={workers})"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} already holds files; refusing to write into it. Choose an empty or new folder."
        )
    jobs = [(class_index, shape, i) for class_index, shape in enumerate(SHAPES) for i in range(per_class)]
    write = partial(_write_scene, out_dir=out_dir, size=size, height=height, seed=seed)
    if workers == 1:
        return sorted(map(write, jobs))
    with ProcessPoolExecutor(workers) as pool:  # ≈ 20 ms per 500×375 scene: tens of thousands for benchmarks
        return sorted(pool.map(write, jobs, chunksize=64))
