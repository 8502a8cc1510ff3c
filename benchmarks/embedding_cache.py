"""Benchmark: fine-tuning's head stage on cached embeddings against running the frozen backbone every epoch.

The same model, head, images, batch size and augmentation (the committed params.yaml's ``train`` and ``augment``):
  baseline   one epoch of the whole classifier with its backbone frozen, fitted on augmented images (the train
             stage's Batches): what stage 1 cost before the embedding cache
  cached     one epoch of the head alone on the images' pooled features (visionops.training.head.FeatureBatches, a
             view drawn per image and epoch), what train.py runs now
ratio = baseline epoch seconds ÷ cached epoch seconds (goal: ≥ 20 on 2 cores). Each is the median of --epochs epochs
after one warm-up epoch (tracing). Also measured: the one-off embedding of ``train.head.views`` views per image into
an empty cache (cold) and reading them back from it (warm), and after how many head epochs the cold embedding has
paid for itself (cold seconds ÷ (baseline − cached epoch seconds)).
Data: ../shared/datasets/flowers when present, else the embedded sample generated into a temporary folder.
Usage: python benchmarks/embedding_cache.py [--data DIR] [--epochs 3] [--out CSV]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import keras
import pandas as pd
from epochs import EpochTimes

from visionops.contracts.model import ModelInfo
from visionops.data.augment import build_augment
from visionops.data.probe import is_hidden
from visionops.params import load_params
from visionops.training.embeddings import CACHE_ENV
from visionops.training.fitting import compile_for_stage, make_batches
from visionops.training.head import feature_batches, head_model
from visionops.training.model import batchnorm_frozen, build_model, freeze_for_stage
from visionops.training.weights import build_backbone

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "datasets" / "flowers"


def median_epoch(model: keras.Model, batches: keras.utils.PyDataset, epochs: int) -> float:
    """Median seconds of ``epochs`` epochs after one warm-up epoch."""
    times = EpochTimes()
    model.fit(batches, epochs=epochs + 1, verbose=0, callbacks=[times], shuffle=False)
    return statistics.median(times.seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="class-per-folder images (default: shared flowers, else the sample)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed after the warm-up")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "embedding_cache.csv")
    args = parser.parse_args()
    settings = load_params(HERE.parent / "params.yaml")
    params, augment = settings.train, settings.augment
    with tempfile.TemporaryDirectory(prefix="visionops-bench-embed-") as tmp:
        root = args.data or (SHARED if SHARED.is_dir() else None)
        if root is None:
            from visionops.data.sample import generate_sample

            root = Path(tmp) / "sample"
            generate_sample(root)
        paths = sorted(p for p in root.rglob("*") if p.is_file() and not is_hidden(p.relative_to(root)))
        paths = [p for p in paths if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        rel = [p.relative_to(root) for p in paths]
        frame = pd.DataFrame({"path": [str(p) for p in rel], "label": [p.parts[0] for p in rel]})
        lists = {"train": frame, "val": frame.iloc[:0]}
        shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
        info = ModelInfo.for_task(
            params.task, sorted(set(frame["label"])), image_size=params.size, resize_side=params.cached_side
        )
        pipeline = build_augment(augment, params.task, params.seed)
        train, _ = make_batches(  # as train.py makes them
            root,
            lists,
            info,
            params=params,
            runtime=settings.runtime,
            pipeline=pipeline,
            batch_size=params.batch_size,
            cache_root=Path(tmp) / ".cache",
        )
        backbone, used = build_backbone(params)
        model = build_model(
            backbone,
            len(info.classes),
            params.dropout,
            freeze_batchnorm=batchnorm_frozen(params.finetune.batchnorm, True),
        )
        freeze_for_stage(model, 1)
        compile_for_stage(model, params.head, len(train), params=params, xla=False)
        baseline = median_epoch(model, train, args.epochs)

        os.environ[CACHE_ENV] = str(Path(tmp) / "cache")
        data = {"train": (train, shas), "val": (None, [])}
        start = time.perf_counter()
        feature_batches(backbone, used, params=params, augment=augment, data=data)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        features, _ = feature_batches(backbone, used, params=params, augment=augment, data=data)
        warm = time.perf_counter() - start
        head = head_model(model)
        compile_for_stage(head, params.head, len(features), params=params, xla=False)
        cached = median_epoch(head, features, args.epochs)
    row = {
        "dataset": root.name if args.data or root == SHARED else "sample",
        "images": len(paths),
        "model": params.model,
        "size": params.size,
        "views": params.head.views,
        "baseline_epoch_s": round(baseline, 3),
        "cached_epoch_s": round(cached, 4),
        "ratio": round(baseline / cached, 1),
        "embed_cold_s": round(cold, 1),
        "embed_warm_s": round(warm, 2),
        "break_even_epochs": round(cold / (baseline - cached), 1),
        "goal_ratio": 20,
        "met": baseline / cached >= 20,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "date": date.today().isoformat(),
    }
    print(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
