"""Input pipeline: cached uint8 arrays (visionops.data.cache) → shuffle → augment → batch, per epoch.

Each epoch only crops and augments what was decoded once. Batches come from a ``keras.utils.PyDataset`` whose worker
threads run albumentations: OpenCV releases the GIL, where a ``tf.numpy_function`` inside tf.data holds it
(benchmarks/input_pipeline.py measures both). A single pass (scoring) reads images decoded on access instead.

Images reach the model as float32 in 0–255: Keras EfficientNet rescales its own input.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import keras
import numpy as np

from visionops.contracts.model import ROTATIONS
from visionops.data.cache import DecodedOnAccess
from visionops.data.preprocess import center_crop


def examples(labels: Sequence[int], task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image index, class, rotation) of every example.

    Classification: one example per image, its label. Orientation: four per image, one per rotation, so
    the four classes are exactly balanced and evaluation scores every rotation of every image.
    """
    n = len(labels)
    if task == "orientation":
        index = np.repeat(np.arange(n), len(ROTATIONS))
        rotation = np.tile(np.arange(len(ROTATIONS)), n)
        return index, rotation.copy(), rotation
    return np.arange(n), np.asarray(labels, dtype=np.int64), np.zeros(n, dtype=np.int64)


def random_resized_crop(
    image: np.ndarray, size: int, scale: tuple[float, float], *, rng: np.random.Generator, ratio: float = 4 / 3
) -> np.ndarray:
    """A random window of ``scale`` × the image's area and aspect ratio within [1/ratio, ratio], resized to ``size``.

    The Inception/torchvision RandomResizedCrop, drawn from ``rng`` so a batch is the same whichever thread makes
    it. Ten tries at a window that fits, then the centre square (what torchvision falls back to as well).
    """
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(-np.log(ratio), np.log(ratio)))
        cw, ch = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            image = image[top : top + ch, left : left + cw]
            break
    else:
        image = center_crop(image, min(h, w))
    interpolation = cv2.INTER_AREA if image.shape[0] * image.shape[1] > size * size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


@dataclass(frozen=True)
class Variation:
    """What makes training batches differ from evaluation ones: augmentation, random crops and class weights."""

    augment: A.Compose | None = None
    crop_scale: tuple[float, float] | None = None  # None: fixed-size random crops of the cached square
    class_weights: dict[int, float] | None = None


class Batches(keras.utils.PyDataset):
    """Batches of (float32 images in 0–255, one-hot labels, sample weights) from cached arrays (or decoded on access).

    Training batches (a :class:`Variation` given) are shuffled per epoch, randomly cropped and augmented; evaluation
    batches are centre-cropped and never augmented. Batch ``i`` of epoch ``e`` is augmented with seed (seed, e, i),
    so results do not depend on which worker thread makes it.
    """

    def __init__(
        self,
        images: np.ndarray | DecodedOnAccess,
        labels: Sequence[int],
        *,
        num_classes: int,
        size: int,
        batch_size: int,
        task: str = "classification",
        seed: int = 0,
        workers: int = 1,
        variation: Variation | None = None,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        self.training = variation is not None
        variation = variation or Variation()
        self.images, self.size, self.batch_size = images, size, batch_size
        self.num_classes, self.seed, self.crop_scale = num_classes, seed, variation.crop_scale
        self.index, self.label, self.rotation = examples(labels, task)
        self.weights = np.ones(num_classes, np.float32)
        for label, weight in (variation.class_weights or {}).items():
            self.weights[label] = weight
        self.augment = variation.augment if self.training else None
        self._local = threading.local()
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.training:
            return np.arange(len(self.index))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.index))

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def on_epoch_end(self) -> None:
        """Reshuffle for the next epoch (Keras calls this after the epoch's worker threads stopped)."""
        self.epoch += 1
        self.order = self._order()

    def _pipeline(self) -> A.Compose | None:
        # albumentations transforms hold their random state: one copy per worker thread.
        if self.augment is not None and not hasattr(self._local, "pipeline"):
            self._local.pipeline = copy.deepcopy(self.augment)
        return getattr(self._local, "pipeline", None)

    def example(self, j: int, rng: np.random.Generator | None) -> np.ndarray:
        """Example ``j`` as an RGB uint8 array of the training size (cropped, rotated, not yet augmented)."""
        image = self.images[self.index[j]]
        if rng is not None and self.rotation[j] == 0 and self.crop_scale is not None:
            image = random_resized_crop(image, self.size, self.crop_scale, rng=rng)
        elif rng is not None and self.rotation[j] == 0 and image.shape[0] > self.size:
            top, left = rng.integers(0, image.shape[0] - self.size + 1, size=2)
            image = image[top : top + self.size, left : left + self.size]
        else:  # evaluation, and orientation (no random crop: a geometric change of the labelled image)
            image = center_crop(image, self.size)
        return np.ascontiguousarray(np.rot90(image, k=int(self.rotation[j])))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        chosen = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.training else None
        pipeline = self._pipeline()
        if pipeline is not None and rng is not None:  # (a pipeline exists for training batches only)
            pipeline.set_random_seed(int(rng.integers(2**31)))
        batch = np.empty((len(chosen), self.size, self.size, 3), dtype=np.float32)
        for row, j in enumerate(chosen):
            batch[row] = self._augmented(self.example(j, rng), pipeline)
        labels = self.label[chosen]
        return batch, np.eye(self.num_classes, dtype=np.float32)[labels], self.weights[labels]

    def _augmented(self, image: np.ndarray, pipeline: A.Compose | None) -> np.ndarray:
        if pipeline is None:
            return image
        image = pipeline(image=image)["image"]
        if image.shape[:2] != (self.size, self.size):
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return image

    def view(self, j: int, seed: Sequence[int] | None) -> np.ndarray:
        """Example ``j`` as one view, RGB uint8: as evaluation sees it (``seed`` None), or a training view whose random
        crop and augmentation are drawn from ``seed`` alone (not from the batch or the epoch it would fall in)."""
        if seed is None or not self.training:
            return self.example(j, None)
        rng = np.random.default_rng(list(seed))
        pipeline = self._pipeline()
        if pipeline is not None:
            pipeline.set_random_seed(int(rng.integers(2**31)))
        return self._augmented(self.example(j, rng), pipeline)


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> dict[int, float]:
    """Weights inversely proportional to class frequency, averaging 1 over the examples (sklearn's 'balanced')."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    total = counts.sum()
    return {c: float(total / (num_classes * counts[c])) if counts[c] else 0.0 for c in range(num_classes)}
