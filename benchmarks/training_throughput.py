"""Benchmark: EfficientNet training images/s with the real input pipeline against pre-made batches, same run.

Compared, per image size (default 128 and 224 px), on the same model, images and batches:
  baseline   in-memory: the pipeline's batches of one epoch made once as NumPy arrays, fitted with model.fit, so the
             model is the only cost
  visionops  cache + Batches PyDataset (augmentation from params.yaml in worker threads), built by
             visionops.training.fitting.make_batches as the train stage builds it
ratio = pipeline images/s ÷ in-memory images/s: near 1.0, the input pipeline never makes the model wait.
The model is the train stage's (visionops.training.model and fitting.compile_for_stage with the committed params.yaml
train section): random weights and every layer training, as stage 2 from scratch trains. An epoch is --steps batches (a
seeded subset of steps × batch images); the two inputs alternate epoch by epoch so drift of this machine hits both
alike; one warm-up epoch of each (tracing), then the median of --epochs epochs of each.
Data: ../shared/datasets/clothing when present, else the embedded sample generated into a temporary folder.
Writes results/training_throughput.csv (or --out).
Usage: python benchmarks/training_throughput.py [--data DIR] [--sizes 128 224] [--steps 10] [--epochs 3] [--out CSV]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from epochs import EpochTimes

from visionops.config import Params, TrainParams
from visionops.contracts.model import ModelInfo
from visionops.data.augment import build_augment
from visionops.data.dataset import Batches
from visionops.data.probe import is_hidden
from visionops.params import load_params
from visionops.training.distribute import configure_precision, distribution_strategy
from visionops.training.fitting import compile_for_stage, global_batch_size, make_batches
from visionops.training.model import batchnorm_frozen, build_model, freeze_for_stage
from visionops.training.weights import build_backbone

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "datasets" / "clothing"
BASELINE = "baseline: in-memory NumPy batches (model only)"
PIPELINE = "visionops cache + Batches PyDataset (train.py)"


def image_lists(root: Path, count: int, seed: int) -> tuple[list[str], pd.DataFrame]:
    """All class names under ``root``, and a seeded subset of ``count`` images as a split list (path, label)."""
    paths = sorted(p.relative_to(root) for p in root.rglob("*.jp*g") if not is_hidden(p.relative_to(root)))
    if len(paths) < count:
        raise SystemExit(f"{root} holds {len(paths)} JPEGs, fewer than --steps × batch = {count}: lower --steps")
    chosen = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))[:count]]
    frame = pd.DataFrame({"path": [str(p) for p in chosen], "label": [p.parts[0] for p in chosen]})
    return sorted({p.parts[0] for p in paths}), frame


def model_and_batches(
    root: Path, params: Params, size: int, count: int, strategy: tf.distribute.Strategy, out_dir: Path
) -> tuple[keras.Model, Batches]:
    """The train stage's stage-2 model and training batches at ``size`` px, over ``count`` images of ``root``."""
    train = TrainParams.model_validate({**params.train.model_dump(), "image_size": size, "weights": None})
    xla = configure_precision()["xla"]
    classes, listed = image_lists(root, count, train.seed)
    keras.utils.set_random_seed(train.seed)
    with strategy.scope():
        backbone, weights = build_backbone(train)
        frozen = batchnorm_frozen(train.finetune.batchnorm, weights.pretrained)
        model = build_model(backbone, len(classes), train.dropout, freeze_batchnorm=frozen)
    freeze_for_stage(model, 2, train.finetune.unfreeze_blocks, freeze_batchnorm=frozen)
    info = ModelInfo.for_task(train.task, classes, image_size=size, resize_side=train.cached_side, model=train.model)
    lists = {"train": listed, "val": listed.iloc[:0]}
    pipeline = build_augment(params.augment, train.task, train.seed)
    batches, _ = make_batches(
        root,
        lists,
        info,
        params=train,
        runtime=params.runtime,
        pipeline=pipeline,
        batch_size=global_batch_size(train.batch_size, strategy),
        cache_root=out_dir.parent / ".cache",
    )
    compile_for_stage(model, train.finetune, len(batches), params=train, xla=xla)
    return model, batches


def measure(model: keras.Model, batches: Batches, epochs: int) -> dict[str, float]:
    """Median seconds per epoch of each input, alternating one epoch of each after one warm-up epoch of each."""
    made = [batches[i] for i in range(len(batches))]
    x, y, w = (np.concatenate(part) for part in zip(*made, strict=True))
    timers = {BASELINE: EpochTimes(), PIPELINE: EpochTimes()}
    for _ in range(1 + epochs):
        model.fit(
            x, y, sample_weight=w, batch_size=batches.batch_size, shuffle=False, verbose=0, callbacks=[timers[BASELINE]]
        )
        model.fit(batches, shuffle=False, verbose=0, callbacks=[timers[PIPELINE]])
    return {name: statistics.median(timer.seconds[1:]) for name, timer in timers.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--steps", type=int, default=10, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs of each input, after one warm-up")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "training_throughput.csv")
    args = parser.parse_args()
    strategy = distribution_strategy()  # first: it may split the CPU, which must precede any TensorFlow work
    params = load_params(HERE.parent / "params.yaml")
    count = args.steps * global_batch_size(params.train.batch_size, strategy)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or (SHARED if SHARED.is_dir() else None)
        dataset = "shared/datasets/clothing" if root == SHARED else str(root)
        if root is None:
            from visionops.data.sample import generate_sample

            root, dataset = Path(tmp) / "data", "embedded sample"
            generate_sample(root)
        for size in args.sizes:
            model, batches = model_and_batches(root, params, size, count, strategy, Path(tmp) / "train")
            seconds = measure(model, batches, args.epochs)
            for name, s in seconds.items():
                ratio = seconds[BASELINE] / s  # (images/s ÷ baseline images/s: the same images per epoch)
                rows.append(
                    {
                        "size": size,
                        "pipeline": name,
                        "images_per_s": round(count / s, 2),
                        "ratio_vs_baseline": round(ratio, 3),
                    }
                )
                print(f"{size:>4} px  {name:<50} {count / s:>8.2f} img/s  ratio {ratio:.3f}", file=sys.stderr)
    frame = pd.DataFrame(rows)
    frame.insert(0, "dataset", dataset)
    frame.insert(1, "images", count)
    frame["model"], frame["batch"] = params.train.model, count // args.steps
    frame["steps"], frame["epochs"] = args.steps, args.epochs
    frame["cores"], frame["machine"], frame["date"] = os.cpu_count(), platform.machine(), date.today().isoformat()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(frame[["size", "pipeline", "images_per_s", "ratio_vs_baseline"]].to_markdown(index=False))


if __name__ == "__main__":
    main()
