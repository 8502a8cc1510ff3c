"""Benchmark: training input pipelines, images/s, same images, size and augmentations, same run.

Compared (batch 32, 128 px, flip + brightness/contrast + random crop):
  baseline   tutorial style: keras PyDataset that cv2.imreads, albumentations and /255 every image, every epoch
  tf-native  tf.data: read_file + decode_jpeg + resize + tf.image crop/flip/brightness/contrast, parallel map
  numpy_fn   visionops cache + albumentations inside tf.numpy_function in tf.data (AUTOTUNE): holds the GIL
  visionops  visionops cache + Batches (keras PyDataset, 2 worker threads): what train.py uses
Epoch 1 includes decoding (and, for the cached pipelines, filling the cache); epochs 2-3 are the steady state.
Data: ../shared/datasets/flowers when present, else the embedded sample. Writes results/input_pipeline.csv.
Usage: python benchmarks/input_pipeline.py [--data DIR] [--size 128] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import albumentations as A
import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from visionops.augment import build_augment
from visionops.cache import cache_images
from visionops.config import AugmentStep
from visionops.dataset import Batches
from visionops.probe import is_hidden

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "datasets" / "flowers"
BATCH = 32
STEPS = [
    AugmentStep(name="HorizontalFlip", p=0.5),
    AugmentStep(name="RandomBrightnessContrast", p=0.5, brightness_limit=0.2, contrast_limit=0.2),
]


class TutorialSequence(keras.utils.PyDataset):
    """The common tutorial loader: decode, resize, crop, augment and scale every image in every epoch."""

    def __init__(self, paths: list[Path], size: int) -> None:
        super().__init__()
        self.paths, self.size = paths, size
        self.augment = A.Compose(
            [
                A.RandomResizedCrop(size=(size, size), scale=(0.75, 1.0)),
                A.HorizontalFlip(),
                A.RandomBrightnessContrast(0.2, 0.2),
            ]
        )

    def __len__(self) -> int:
        return -(-len(self.paths) // BATCH)

    def __getitem__(self, i: int) -> np.ndarray:
        out = []
        for path in self.paths[i * BATCH : (i + 1) * BATCH]:
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            image = cv2.resize(image, (round(self.size * 1.15),) * 2)
            out.append(self.augment(image=image)["image"] / 255.0)
        return np.stack(out).astype(np.float32)


def tf_native(paths: list[Path], size: int) -> tf.data.Dataset:
    """The tf.image equivalent, decoding every epoch."""

    def load(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, (round(size * 1.15),) * 2)
        image = tf.image.random_crop(image, (size, size, 3))
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_brightness(image, 0.2 * 255)
        return tf.image.random_contrast(image, 0.8, 1.2)

    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths]).shuffle(len(paths))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def numpy_function(paths: list[Path], size: int) -> tuple[callable, tf.data.Dataset | None]:
    """visionops' cache, but augmentation through tf.numpy_function (the GIL-bound alternative)."""
    state: dict = {}
    pipeline = build_augment(STEPS, "classification", 0)

    def augment(image: np.ndarray) -> np.ndarray:
        top, left = np.random.randint(0, image.shape[0] - size + 1, 2)
        crop = np.ascontiguousarray(image[top : top + size, left : left + size])
        return pipeline(image=crop)["image"].astype(np.float32)

    def epoch():
        if "images" not in state:
            state["images"] = cache_images(paths, round(size * 1.15))
            ds = tf.data.Dataset.from_tensor_slices(state["images"]).shuffle(len(paths))
            ds = ds.map(
                lambda x: tf.ensure_shape(tf.numpy_function(augment, [x], tf.float32), (size, size, 3)),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            state["ds"] = ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)
        return state["ds"]

    return epoch


def visionops_batches(paths: list[Path], size: int):
    state: dict = {}

    def epoch():
        if "batches" not in state:
            images = cache_images(paths, round(size * 1.15))
            state["batches"] = Batches(
                images,
                [0] * len(paths),
                1,
                size,
                BATCH,
                training=True,
                workers=2,
                augment=build_augment(STEPS, "classification", 0),
            )
        return state["batches"]

    return epoch


def consume_pydataset(dataset: keras.utils.PyDataset) -> None:
    """Iterate one epoch the way model.fit does: through Keras' adapter, with its worker threads."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(dataset, shuffle=False)
    adapter.on_epoch_begin()
    for _ in adapter.get_numpy_iterator():
        pass
    adapter.on_epoch_end()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    root = args.data or (SHARED if SHARED.is_dir() else None)
    if root is None:
        from visionops.sample import generate_sample

        root = Path(os.environ.get("TMPDIR", "/tmp")) / "visionops-bench-sample"
        if not root.exists():
            generate_sample(root)
    paths = sorted(p for p in root.rglob("*.jp*g") if not is_hidden(p.relative_to(root)))
    for p in paths:
        p.read_bytes()  # warm the page cache
    size = args.size
    candidates = {
        "baseline: tutorial PyDataset (cv2.imread + albumentations + /255 per epoch)": lambda: consume_pydataset(
            TutorialSequence(paths, size)
        ),
        "tf-native tf.data (decode_jpeg + tf.image augment, parallel map)": (lambda ds: lambda: [None for _ in ds])(
            tf_native(paths, size)
        ),
        "visionops cache + albumentations in tf.numpy_function (AUTOTUNE)": (lambda get: lambda: [None for _ in get()])(
            numpy_function(paths, size)
        ),
        "visionops cache + Batches PyDataset, 2 threads (train.py)": (lambda get: lambda: consume_pydataset(get()))(
            visionops_batches(paths, size)
        ),
    }
    rows = []
    for name, run_epoch in candidates.items():
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            run_epoch()
            times.append(time.perf_counter() - start)
        steady = float(np.median(times[1:])) if len(times) > 1 else times[0]
        rows.append(
            {
                "pipeline": name,
                "epoch1_images_per_s": round(len(paths) / times[0], 1),
                "steady_images_per_s": round(len(paths) / steady, 1),
            }
        )
        first, steady = rows[-1]["epoch1_images_per_s"], rows[-1]["steady_images_per_s"]
        print(f"{name:<80} epoch 1 {first:>7} img/s, then {steady:>7}", file=sys.stderr)
    frame = pd.DataFrame(rows)
    frame["steady_ratio_vs_baseline"] = (frame["steady_images_per_s"] / frame["steady_images_per_s"].iloc[0]).round(2)
    frame.insert(0, "images", len(paths))
    frame.insert(0, "dataset", "shared/datasets/flowers" if root == SHARED else str(root))
    frame["size"], frame["batch"], frame["cores"] = size, BATCH, os.cpu_count()
    frame["machine"], frame["date"] = platform.machine(), date.today().isoformat()
    out = HERE / "results" / "input_pipeline.csv"
    frame.to_csv(out, index=False)
    print(
        frame[["pipeline", "epoch1_images_per_s", "steady_images_per_s", "steady_ratio_vs_baseline"]].to_markdown(
            index=False
        )
    )


if __name__ == "__main__":
    main()
