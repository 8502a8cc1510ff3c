"""The train stage: two-stage fine-tuning of EfficientNet on the split lists, logged as one MLflow run.

Stage 1 trains the head on a frozen backbone; stage 2 unfreezes the backbone's top blocks (BatchNormalization
stays frozen over pretrained weights) at a lower learning rate (:mod:`visionops.training.fitting`). Every epoch is
backed up under ``artifacts/.resume/``, so a killed run resumes where it stopped when started again with the same config
and data, into the same MLflow run; a finished stage is not redone.

Writes into the output folder: model.keras, history.csv, curves.png, classes.json (:class:`ModelInfo`),
weights.json (the initial weights really used), params.json, augment_preview.png, tensorboard/ and, when tracked,
run.json (:class:`RunInfo`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from visionops.config import Params, TrainParams
from visionops.contracts.data import SplitInfo, read_split
from visionops.contracts.model import ModelInfo, RunInfo, WeightsUsed, model_file
from visionops.contracts.results import write_resolved
from visionops.data.augment import build_augment, preview_grid
from visionops.data.dataset import Batches
from visionops.files import atomic_path, atomic_write_bytes, atomic_write_text, disk_room, project_root
from visionops.tracking import connection, lineage, record, runs
from visionops.training.distribute import configure_precision, distribution_strategy, strategy_info
from visionops.training.fitting import (
    EpochListener,
    StageFitting,
    global_batch_size,
    history,
    make_batches,
    resume_dir,
    sync_batchnorm,
    worker_dirs,
)
from visionops.training.head import FeatureBatches, feature_batches, head_model
from visionops.training.model import batchnorm_frozen, build_model
from visionops.training.plots import plot_history
from visionops.training.weights import build_backbone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What the train stage produced."""

    model_path: Path
    history: pd.DataFrame
    weights: WeightsUsed
    info: ModelInfo
    run: RunInfo | None = None  # the MLflow run, when tracked
    warnings: list[str] = field(default_factory=list)


# Bytes per model value training writes at its peak: stage 1's finished weights and stage 2's per-epoch backup
# (4 bytes each), then model.keras, which holds the weights and the optimizer's two slots (Adam, AdamW) besides.
TRAINING_BYTES_PER_VALUE = 4 * (1 + 1 + 3)


def training_room(model: keras.Model) -> int:
    """About the disk space training's outputs take at their peak (the disk cache not included), in bytes."""
    return TRAINING_BYTES_PER_VALUE * model.count_params()


def train(
    params: Params, *, data_dir: Path, split_dir: Path, out_dir: Path, on_epoch: EpochListener | None = None
) -> TrainResult:
    """Fine-tune an EfficientNet, without tracking, on one device or under the strategy the machine calls for.

    The recipe: (1) the backbone with its initial weights (ImageNet from the installed package, a file, or random),
    (2) a dropout + softmax head around it, (3) the head alone on the frozen backbone's cached embeddings, (4) the top
    blocks unfrozen (BatchNormalization frozen over pretrained weights) at a lower rate, on augmented images; each
    stage keeps the weights of its best validation epoch and resumes from per-epoch backups after a kill.

    ``train.batch_size`` is per replica: each fit step takes ``batch_size × replicas`` examples (the global batch).
    Under MultiWorkerMirroredStrategy every worker builds the same global batches and runs the same fits and saves
    (they hold collective ops), but only the chief writes into ``out_dir``; the others write into a temporary folder
    that is removed, and keep their own resume folder so a restarted cluster resumes in step.

    Args:
        params: the whole params.yaml: ``train`` and ``augment`` make the model, ``runtime`` says how to run.
        data_dir: the image root the split lists are relative to.
        split_dir: the split stage's output folder.
        out_dir: the stage's output folder (``artifacts/train``).
        on_epoch: called after every epoch with its step on the run's one epoch axis and its metrics (live
            tracking); None: nothing but the stage's own files.

    Raises:
        ConfigError: bad augmentation, weights or device settings (checked before any data is read).
        WeightsError: ImageNet weights unavailable and ``train.weights_fallback`` is ``stop``.
        FileNotFoundError: the split stage has not run.
    """
    started, t = time.perf_counter(), params.train
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    pipeline = build_augment(params.augment, t.task, t.seed)
    lists, split = read_split(split_dir)
    strategy, device, topology = _devices(t)
    with strategy.scope():
        backbone, weights = build_backbone(t)  # (1)
        log.info("%s from %s", t.model, weights.describe())
        frozen_bn = batchnorm_frozen(t.finetune.batchnorm, weights.pretrained)
        info = ModelInfo.for_task(
            t.task,
            split.classes,
            image_size=t.size,
            resize_side=t.cached_side,
            model=t.model,
            batchnorm_frozen=frozen_bn,
            **device,
        )
        model = build_model(backbone, len(info.classes), t.dropout, freeze_batchnorm=frozen_bn)  # (2)
        head = head_model(model)
        if not frozen_bn:
            sync_batchnorm(model, strategy)
    # A full disk mid-run is one line naming the folder and about how much room training needs (not an HDF5 or
    # TensorFlow traceback); the rerun resumes. Not checked first: a resumed run needs less, and the disk cache
    # inside has its own exact check.
    what = "training's outputs (per-epoch backups, TensorBoard logs, model.keras)"
    then = "then run `visionops train` again: it resumes from its last whole per-epoch backup"
    with disk_room(out_dir.parent, training_room(model), what, then, check_first=False):
        images, val_images = make_batches(
            data_dir,
            lists,
            info,
            params=t,
            runtime=params.runtime,
            pipeline=pipeline,
            batch_size=global_batch_size(t.batch_size, strategy),
            cache_root=out_dir.parent / ".cache",
        )
        resume = resume_dir(out_dir, t, params.augment, split_id=split.split_id)
        with worker_dirs(out_dir, resume, topology) as (write_dir, resume):
            _write_preview(write_dir, images)
            fitting = StageFitting(model, resume, write_dir, t, frozen_bn, device["xla"], on_epoch)

            def embeddings() -> tuple[FeatureBatches, FeatureBatches | None]:
                data = {s: (b, list(lists[s]["sha256"])) for s, b in (("train", images), ("val", val_images))}
                return feature_batches(backbone, weights, params=t, augment=params.augment, data=data)

            fitting.fit(1, head, t.head, data=embeddings, steps_per_epoch=len(images))  # (3)
            fitting.fit(2, model, t.finetune, data=lambda: (images, val_images), steps_per_epoch=len(images))  # (4)
            merged = _write_outputs(write_dir, model, resume, weights, info, params)
            shutil.rmtree(resume, ignore_errors=True)
    # The stage's own work, without process start-up, imports or tracking: what benchmarks/mlops_overhead.py
    # subtracts from the `dvc repro` time to tell the MLOps layer's cost.
    log.info("train: %d epochs trained, outputs written in %.1f s", len(merged), time.perf_counter() - started)
    return TrainResult(model_file(write_dir), merged, weights, info)


def _devices(params: TrainParams) -> tuple[tf.distribute.Strategy, dict[str, Any], dict[str, Any]]:
    """The strategy (chosen first: it may split the CPU, which must precede any TensorFlow work), the device
    settings recorded in classes.json, and the cluster's topology; the run seeded."""
    strategy = distribution_strategy()
    keras.utils.set_random_seed(params.seed)
    topology = strategy_info(strategy)
    device = {**configure_precision(), **{k: topology[k] for k in ("strategy", "replicas", "workers")}}
    log.info(
        "training under %s: %d replica(s) on %d worker(s), global batch %d",
        topology["strategy"],
        topology["replicas"],
        topology["workers"],
        global_batch_size(params.batch_size, strategy),
    )
    return strategy, device, topology


def _write_preview(folder: Path, batches: Batches) -> None:
    preview = np.clip(batches[0][0][:32], 0, 255).astype(np.uint8)
    atomic_write_bytes(folder / "augment_preview.png", cv2.imencode(".png", preview_grid(preview))[1].tobytes())


def _write_outputs(
    folder: Path, model: keras.Model, resume: Path, weights: WeightsUsed, info: ModelInfo, params: Params
) -> pd.DataFrame:
    """model.keras, history.csv, curves.png, weights.json, classes.json and params.json; returns the history."""
    merged = history(resume)
    with atomic_path(model_file(folder)) as tmp:  # never a truncated model.keras for evaluate to load
        model.save(tmp)
    atomic_write_text(folder / "history.csv", merged.to_csv(index=False, lineterminator="\n"))
    atomic_write_bytes(folder / "curves.png", plot_history(merged))
    weights.write(folder)
    info.write(folder)
    write_resolved(folder, {"train": params.train, "augment": params.augment})
    return merged


def train_tracked(params: Params, data_dir: Path, split_dir: Path, *, out_dir: Path) -> TrainResult:
    """The train stage as ``dvc repro`` runs it: :func:`train`, logged as one MLflow run.

    The tracking server is checked first (before TensorFlow is imported), so an outage stops nothing but this
    command. Every epoch's metrics reach the run as soon as the epoch ends, and the machine's CPU, memory and GPU
    use every 10 s (MLflow's system metrics), so a running training shows in the UI. A killed training resumes into
    the same run (its id is kept in the resume folder); a failed one marks the run FAILED. run.json is written
    before the final logging, so a server lost during training loses nothing: ``visionops log-run`` logs the rest
    later (no epoch twice), and the stage succeeds with a warning.

    Raises:
        TrackingUnavailable: the tracking server does not answer; nothing was trained.
    """
    client = connection.connect(consequence="nothing was trained: rerun `visionops train` once it answers")
    t = params.train
    name = params.tracking.run_name or lineage.default_run_name(t, split_dir)
    resume = resume_dir(Path(out_dir), t, params.augment, split_id=SplitInfo.read(split_dir).split_id) / "mlflow_run_id"
    run = runs.start_run(client, params.tracking.experiment, name, tags={"stage": "train"}, resume_file=resume)
    try:
        with runs.system_metrics(run.run_id):
            live = runs.live_metrics(client, run.run_id)
            result = train(params, data_dir=data_dir, split_dir=split_dir, out_dir=out_dir, on_epoch=live)
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run.run_id, "FAILED")
        raise
    run.write(out_dir)

    def log() -> None:
        record.log_training(
            client, run.run_id, params, root=project_root(), train_dir=Path(out_dir), split_dir=Path(split_dir)
        )

    warning = runs.logged_or_warning("the training", log)
    return replace(result, run=run, warnings=[warning] if warning else [])
