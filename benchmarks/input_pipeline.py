"""Benchmark: training input pipelines, images/s, same images, size and augmentations, same run.

Compared (batch 32, flip + brightness/contrast + random crop from the centre square resized to size × 1.15):
  baseline   tutorial style: keras PyDataset that cv2.imreads, albumentations and /255 every image, every epoch
  tf-native  tf.data, decoding every epoch, the same square as visionops makes: the same DCT scaling
             (decode_jpeg's ratio), centre square, area resize (INTER_AREA's box filter), then tf.image
             crop/flip/brightness/contrast in a parallel map
  numpy_fn   visionops cache + albumentations inside tf.numpy_function in tf.data (AUTOTUNE): holds the GIL
  visionops  visionops cache + Batches (keras PyDataset, 2 worker threads): what train.py uses
Epoch 1 includes decoding (and, for the cached pipelines, filling the cache); epochs 2-3 are the steady state.
Goal (issue 17): train.py's epoch 1 at least 1.5x tf-native's (epoch1_ratio_vs_tf_native).
Data: ../shared/datasets/clothing when present, else the embedded sample. Writes results/input_pipeline.csv.
Usage: python benchmarks/input_pipeline.py [--data DIR] [--size 224] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import albumentations as A
import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from visionops.config import AugmentStep
from visionops.data.augment import build_augment
from visionops.data.cache import cache_images
from visionops.data.dataset import Batches, Variation
from visionops.data.probe import is_hidden

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "datasets"
BATCH = 32
MARGIN = 1.15  # params.yaml's train.resize_margin
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
            image = cv2.imread(str(path))
            assert image is not None, path
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            image = cv2.resize(image, (round(self.size * MARGIN),) * 2)
            out.append(self.augment(image=image)["image"] / 255.0)
        return np.stack(out).astype(np.float32)


def tf_native(paths: list[Path], size: int) -> tf.data.Dataset:
    """The tf.data equivalent, decoding every epoch into the square visionops caches once."""
    side = round(size * MARGIN)

    def load(path: tf.Tensor) -> tf.Tensor:
        data = tf.io.read_file(path)
        stored = tf.io.extract_jpeg_shape(data)
        # decode_jpeg's ratio is fixed per op: one branch per scale, the largest leaving the short side >= side
        reduction = tf.reduce_sum(tf.cast(tf.reduce_min(stored[:2]) >= side * tf.constant([2, 4, 8]), tf.int32))
        decoders = [lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r) for r in (1, 2, 4, 8)]
        image = tf.switch_case(reduction, decoders)
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        short = tf.minimum(h, w)
        image = tf.image.crop_to_bounding_box(image, (h - short) // 2, (w - short) // 2, short, short)
        image = tf.image.resize(image, (side, side), method="area")
        image = tf.image.random_crop(image, (size, size, 3))
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_brightness(image, 0.2 * 255)
        return tf.image.random_contrast(image, 0.8, 1.2)

    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths]).shuffle(len(paths))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def numpy_function(paths: list[Path], size: int) -> Callable[[], tf.data.Dataset]:
    """visionops' cache, but augmentation through tf.numpy_function (the GIL-bound alternative)."""
    state: dict = {}
    pipeline = build_augment(STEPS, "classification", 0)

    def augment(image: np.ndarray) -> np.ndarray:
        top, left = np.random.randint(0, image.shape[0] - size + 1, 2)
        crop = np.ascontiguousarray(image[top : top + size, left : left + size])
        return pipeline(image=crop)["image"].astype(np.float32)

    def epoch():
        if "images" not in state:
            state["images"] = cache_images(paths, round(size * MARGIN))
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
            images = cache_images(paths, round(size * MARGIN))
            state["batches"] = Batches(
                images,
                [0] * len(paths),
                num_classes=1,
                size=size,
                batch_size=BATCH,
                workers=2,
                variation=Variation(augment=build_augment(STEPS, "classification", 0)),
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
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    root = args.data or (SHARED / "clothing" if (SHARED / "clothing").is_dir() else None)
    if root is None:
        from visionops.data.sample import generate_sample

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
        "tf-native tf.data (decode_jpeg + area resize + tf.image augment per epoch)": (
            lambda ds: lambda: [None for _ in ds]
        )(tf_native(paths, size)),
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
        print(
            f"{name:<80} epoch 1 {rows[-1]['epoch1_images_per_s']:>7} img/s, then {rows[-1]['steady_images_per_s']:>7}",
            file=sys.stderr,
        )
    frame = pd.DataFrame(rows)
    frame["steady_ratio_vs_baseline"] = (frame["steady_images_per_s"] / frame["steady_images_per_s"].iloc[0]).round(2)
    tf_native_epoch1 = frame.loc[frame["pipeline"].str.startswith("tf-native"), "epoch1_images_per_s"].item()
    frame["epoch1_ratio_vs_tf_native"] = (frame["epoch1_images_per_s"] / tf_native_epoch1).round(2)
    frame.insert(0, "images", len(paths))
    shared, data = SHARED.resolve(), root.resolve()
    frame.insert(
        0, "dataset", f"shared/datasets/{data.relative_to(shared)}" if data.is_relative_to(shared) else str(root)
    )
    frame["size"], frame["batch"], frame["cores"] = size, BATCH, os.cpu_count()
    frame["machine"], frame["date"] = platform.machine(), date.today().isoformat()
    out = HERE / "results" / "input_pipeline.csv"
    frame.to_csv(out, index=False)
    print(
        frame[
            [
                "pipeline",
                "epoch1_images_per_s",
                "epoch1_ratio_vs_tf_native",
                "steady_images_per_s",
                "steady_ratio_vs_baseline",
            ]
        ].to_markdown(index=False)
    )


if __name__ == "__main__":
    main()
