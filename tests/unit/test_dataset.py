"""The input pipeline: caching, value range, seeded augmentation, evaluation without it (decoding: test_preprocess)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from corpus import exif_rotated_jpeg, good_class, photo_jpeg, write

from visionops.config import AugmentStep
from visionops.data import cache
from visionops.data.augment import build_augment
from visionops.data.cache import DecodedOnAccess, cache_dir_for, cache_images
from visionops.data.dataset import Batches, Variation, balanced_class_weights, examples, random_resized_crop
from visionops.data.preprocess import center_crop, load_square, model_input

AUGMENT = [AugmentStep(name="HorizontalFlip", p=0.5), AugmentStep(name="RandomBrightnessContrast", p=0.8)]


@pytest.mark.parametrize("data", [exif_rotated_jpeg(64, 40), photo_jpeg(333, 250, orientation=6)], ids=["full", "1/4"])
def test_served_bytes_become_what_evaluate_feeds(tmp_path: Path, data: bytes) -> None:
    """predict and the served model (bytes → model_input) see exactly what evaluate sees (cache → Batches).

    So do JPEGs large enough to be decoded at reduced scale: train and serve share the one decoding, no skew.
    """
    path = write(tmp_path, "rotated.jpg", data)
    evaluated = Batches(cache_images([path], 36), [0], num_classes=1, size=32, batch_size=1)[0][0][0]
    served = model_input(path.read_bytes(), 36, 32)
    assert served.dtype == np.float32 and served.shape == (32, 32, 3)
    assert np.array_equal(served, evaluated)


def test_load_square_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "a.png", cv2.imencode(".png", np.zeros((30, 60, 3), np.uint8))[1].tobytes())
    assert load_square(path, 20).shape == (20, 20, 3)
    paths = good_class(tmp_path / "data", "cat", 5)
    monkeypatch.setattr(cache, "CHUNK", 2)  # 5 images: three chunks, the last one short
    memory = cache_images(paths, 40)
    disk = cache_images(paths, 40, cache_dir=tmp_path / "cache")
    again = cache_images(paths, 40, cache_dir=tmp_path / "cache")
    assert memory.shape == (5, 40, 40, 3) and memory.dtype == np.uint8
    assert np.array_equal(memory, disk) and np.array_equal(disk, again)
    assert isinstance(disk, np.memmap) and isinstance(again, np.memmap)
    (file,) = (tmp_path / "cache").glob("*.npy")  # (beside it: its checksum file, cache.checksum_file)
    np.save(tmp_path / "saved.npy", memory)
    assert file.read_bytes() == (tmp_path / "saved.npy").read_bytes(), "written chunk by chunk, read as np.save's"
    for where in (None, tmp_path / "empty"):  # (split.val_ratio 0: no validation image)
        assert cache_images([], 40, cache_dir=where).shape == (0, 40, 40, 3)


def test_decoded_on_access_gives_the_cached_batches_decoding_each_image_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = good_class(tmp_path / "data", "cat", 5)
    decodes: list[Path] = []
    monkeypatch.setattr(cache, "load_square", lambda p, side: decodes.append(p) or load_square(p, side))
    for task in ("classification", "orientation"):
        decodes.clear()
        cached = Batches(cache_images(paths, 40), [0] * 5, num_classes=4, size=32, batch_size=4, task=task)
        lazy = Batches(DecodedOnAccess(paths, 40), [0] * 5, num_classes=4, size=32, batch_size=4, task=task)
        decodes.clear()
        for i in range(len(cached)):
            assert all(np.array_equal(a, b) for a, b in zip(cached[i], lazy[i], strict=True))
        assert sorted(decodes) == sorted(paths), "each image decoded once, the four rotations too"


def test_cache_auto_takes_memory_while_the_images_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="visionops.data.cache")
    assert cache.available_memory() > 0
    monkeypatch.setattr(cache, "available_memory", lambda: 2 * 1000 * 10 * 10 * 3)  # half of it: 1000 images of 10 px
    assert cache.memory_cache_limit(10) == 1000
    assert cache_dir_for("auto", 1000, 10, disk_dir=tmp_path) is None
    assert cache_dir_for("auto", 1001, 10, disk_dir=tmp_path) == tmp_path
    assert "runtime.cache=auto: disk (1001 images of 10 px; memory holds up to 1000)" in caplog.text
    assert (
        cache_dir_for("memory", 10**9, 10, disk_dir=tmp_path) is None
        and cache_dir_for("disk", 1, 10, disk_dir=tmp_path) == tmp_path
    )


def _batches(images: np.ndarray, **kwargs) -> Batches:
    labels = [i % 3 for i in range(len(images))]
    return Batches(images, labels, num_classes=3, size=32, batch_size=4, **kwargs)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (10, 38, 38, 3), dtype=np.uint8)


def test_batches_are_float_0_255_with_one_hot_labels(images: np.ndarray) -> None:
    x, y, w = _batches(images)[0]
    assert x.dtype == np.float32 and x.shape == (4, 32, 32, 3)
    assert x.max() > 200 and x.min() >= 0, "EfficientNet rescales itself: feed 0-255, never divide by 255"
    assert np.array_equal(y.argmax(axis=1), [0, 1, 2, 0]) and np.allclose(y.sum(axis=1), 1)
    assert np.allclose(w, 1)
    assert len(_batches(images)) == 3  # 10 images in batches of 4


def test_evaluation_is_the_centre_crop_without_augmentation(images: np.ndarray) -> None:
    batches = _batches(images)  # (evaluation batches take no Variation: no augmentation, no random crop)
    x, _, _ = batches[0]
    assert np.array_equal(x, np.stack([center_crop(i, 32) for i in images[:4]]).astype(np.float32))


def test_training_augmentation_is_seeded_and_order_free(images: np.ndarray) -> None:
    def make(seed: int) -> Batches:
        pipeline = build_augment(AUGMENT, "classification", seed)
        return _batches(images, variation=Variation(augment=pipeline), seed=seed)

    one, two = make(1), make(1)
    first = one[0][0]
    assert np.array_equal(first, two[0][0])
    assert np.array_equal(one[1][0], two[1][0])
    reversed_order = make(1)
    later, earlier = reversed_order[1][0], reversed_order[0][0]
    assert np.array_equal(earlier, first) and np.array_equal(later, one[1][0])
    assert not np.array_equal(first, make(2)[0][0])
    plain = _batches(images)[0][0]
    assert not np.array_equal(first, plain), "training batches are cropped and augmented"


def test_epochs_reshuffle(images: np.ndarray) -> None:
    batches = _batches(images, variation=Variation(), seed=3)
    first = batches.order.copy()
    batches.on_epoch_end()
    assert sorted(batches.order) == sorted(first) and not np.array_equal(batches.order, first)


def test_orientation_examples_are_balanced_rotations(images: np.ndarray) -> None:
    index, label, rotation = examples([0] * 3, "orientation")
    assert list(index) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert np.bincount(label).tolist() == [3, 3, 3, 3] and np.array_equal(label, rotation)
    batches = Batches(images[:3], [0] * 3, num_classes=4, size=32, batch_size=4, task="orientation")
    x, y, _ = batches[0]
    base = center_crop(images[0], 32)
    for k in range(4):
        assert np.array_equal(x[k], np.rot90(base, k).astype(np.float32))
        assert y[k].argmax() == k


def test_balanced_class_weights() -> None:
    weights = balanced_class_weights([0, 0, 0, 1], 3)
    assert weights[0] == pytest.approx(4 / 9) and weights[1] == pytest.approx(4 / 3) and weights[2] == 0.0
    images = np.zeros((4, 32, 32, 3), np.uint8)
    batches = Batches(
        images, [0, 0, 0, 1], num_classes=3, size=32, batch_size=4, variation=Variation(class_weights=weights)
    )
    assert np.allclose(batches[0][2], [4 / 9, 4 / 9, 4 / 9, 4 / 3])


def test_random_resized_crops_cover_the_scale_range_and_are_seeded(images: np.ndarray) -> None:
    image = np.arange(100 * 100 * 3, dtype=np.uint32).reshape(100, 100, 3).astype(np.uint8)
    crops = [random_resized_crop(image, 32, (0.25, 1.0), rng=np.random.default_rng(i)) for i in range(50)]
    assert all(c.shape == (32, 32, 3) for c in crops)
    assert len({c.tobytes() for c in crops}) == 50, "different seeds, different windows"
    assert np.array_equal(crops[0], random_resized_crop(image, 32, (0.25, 1.0), rng=np.random.default_rng(0)))
    whole = random_resized_crop(image, 100, (1.0, 1.0), rng=np.random.default_rng(0), ratio=1.0)
    assert np.array_equal(whole, image), "scale 1, ratio 1: the whole square, unresized"
    batches = _batches(images, variation=Variation(crop_scale=(0.3, 0.6)), seed=1)
    assert batches[0][0].shape == (4, 32, 32, 3)
    assert not np.array_equal(batches[0][0], _batches(images, variation=Variation(), seed=1)[0][0])
