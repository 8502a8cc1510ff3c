"""The train stage: two-stage fine-tuning of EfficientNet on the split lists, logged as one MLflow run.

Stage 1 trains the head on a frozen backbone; stage 2 unfreezes the backbone's top blocks (BatchNormalization
stays frozen over pretrained weights) at a lower learning rate (:mod:`visionops.fitting`). Every epoch is backed
up under ``artifacts/.resume/``, so a killed run resumes where it stopped when started again with the same config
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

import cv2
import keras
import numpy as np
import pandas as pd

from visionops import tracking
from visionops.augment import build_augment, preview_grid
from visionops.config import AugmentStep, Params, TrainParams, save_resolved
from visionops.contracts import ModelInfo, RunInfo, SplitInfo, read_split
from visionops.distribute import configure_precision, distribution_strategy, strategy_info
from visionops.files import atomic_path, atomic_write_bytes, atomic_write_text, disk_room, project_root
from visionops.fitting import (
    EpochListener,
    compile_for_stage,
    epoch_reporter,
    fit_stage,
    global_batch_size,
    history,
    make_batches,
    resume_dir,
    sync_batchnorm,
    worker_dirs,
)
from visionops.head import FeatureBatches, feature_batches, head_model
from visionops.model import batchnorm_frozen, build_model, freeze_for_stage
from visionops.plots import plot_history
from visionops.weights import WeightsUsed, build_backbone

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


def resize_side(params: TrainParams) -> int:
    """Side of the cached images: the training size plus the crop margin."""
    return round(params.size * params.resize_margin)


# Bytes per model value training writes at its peak: stage 1's finished weights and stage 2's per-epoch backup
# (4 bytes each), then model.keras, which holds the weights and the optimizer's two slots (Adam, AdamW) besides.
TRAINING_BYTES_PER_VALUE = 4 * (1 + 1 + 3)


def training_room(model: keras.Model) -> int:
    """About the disk space training's outputs take at their peak (the disk cache not included), in bytes."""
    return TRAINING_BYTES_PER_VALUE * model.count_params()


def train(
    data_dir: Path,
    split_dir: Path,
    params: TrainParams,
    augment: list[AugmentStep],
    out_dir: Path,
    on_epoch: EpochListener | None = None,
) -> TrainResult:
    """Train without tracking, on one device or under the strategy :func:`distribution_strategy` picks.

    ``train.batch_size`` is per replica: each fit step takes ``batch_size × replicas`` examples (the global
    batch), which the strategy splits across the replicas. Under MultiWorkerMirroredStrategy every worker builds
    the same global batches (same seed and order) and the strategy gives each worker its slice, so N workers
    train exactly as one device would with the same global batch. Every worker runs the same fits and saves
    (they hold collective ops), but only the chief writes into ``out_dir``; the others write into a temporary
    folder that is removed, and keep their own resume folder so a restarted cluster resumes in step.

    Args:
        data_dir: the image root the split lists are relative to.
        split_dir: the split stage's output folder.
        params: the ``train`` section of params.yaml.
        augment: the ``augment`` list of params.yaml.
        out_dir: the stage's output folder (``artifacts/train``).
        on_epoch: called after every epoch with its step on the run's one epoch axis and its metrics (live
            tracking); None: nothing but the stage's own files.

    Raises:
        ConfigError: bad augmentation, weights or device settings (checked before any data is read).
        WeightsError: ImageNet weights unavailable and ``train.weights_fallback`` is ``stop``.
        FileNotFoundError: the split stage has not run.
    """
    started = time.perf_counter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    pipeline = build_augment(augment, params.task, params.seed)
    lists, split = read_split(split_dir)
    strategy = distribution_strategy()  # first: it may split the CPU, which must precede any TensorFlow work
    keras.utils.set_random_seed(params.seed)
    topology = strategy_info(strategy)
    device = {**configure_precision(), **{k: topology[k] for k in ("strategy", "replicas", "workers")}}
    batch = global_batch_size(params.batch_size, strategy)
    log.info(
        "training under %s: %d replica(s) on %d worker(s), global batch %d",
        topology["strategy"],
        topology["replicas"],
        topology["workers"],
        batch,
    )
    with strategy.scope():
        backbone, weights = build_backbone(params)
        log.info("%s from %s", params.model, weights.describe())
        frozen_bn = batchnorm_frozen(params.finetune.batchnorm, weights.pretrained)
        info = ModelInfo.for_task(
            params.task,
            split.classes,
            image_size=params.size,
            resize_side=resize_side(params),
            model=params.model,
            batchnorm_frozen=frozen_bn,
            **device,
        )
        model = build_model(backbone, len(info.classes), params.dropout, frozen_bn)
        head = head_model(model)
        if not frozen_bn:
            sync_batchnorm(model, strategy)
    # A full disk mid-run is one line naming the folder and about how much room training needs (not an HDF5 or
    # TensorFlow traceback); the rerun resumes. Not checked first: a resumed run needs less, and the disk cache
    # inside has its own exact check.
    what = "training's outputs (per-epoch backups, TensorBoard logs, model.keras)"
    then = "then run `visionops train` again: it resumes from its last whole per-epoch backup"
    with disk_room(out_dir.parent, training_room(model), what, then, check_first=False):
        train_batches, val_batches = make_batches(data_dir, out_dir, lists, info, params, pipeline, strategy)

        resume = resume_dir(out_dir, params, augment, split.split_id)
        with worker_dirs(out_dir, resume, topology) as (write_dir, resume):
            preview = np.clip(train_batches[0][0][:32], 0, 255).astype(np.uint8)
            atomic_write_bytes(
                write_dir / "augment_preview.png", cv2.imencode(".png", preview_grid(preview))[1].tobytes()
            )
            shas = {s: list(lists[s]["sha256"]) for s in ("train", "val")}

            def features() -> tuple[FeatureBatches, FeatureBatches | None]:
                data = {"train": (train_batches, shas["train"]), "val": (val_batches, shas["val"])}
                return feature_batches(backbone, weights, params, augment, data, info.resize_side)

            # Stage 1: the head alone on the frozen backbone's cached features; stage 2: the classifier, top blocks
            # unfrozen, on augmented images.
            stages = (
                (1, head, params.head, features),
                (2, model, params.finetune, lambda: (train_batches, val_batches)),
            )
            for stage, fitted, stage_params, data in stages:
                freeze_for_stage(model, stage, params.finetune.unfreeze_blocks, frozen_bn)
                compile_for_stage(fitted, stage_params, len(train_batches), params, device["xla"])
                live = [epoch_reporter(on_epoch, stage, resume)] if on_epoch else []
                fit_stage(
                    fitted,
                    stage,
                    stage_params.epochs,
                    data,
                    resume=resume,
                    out_dir=write_dir,
                    patience=params.early_stopping_patience,
                    min_delta=params.early_stopping_min_delta,
                    callbacks=live,
                )
            merged = history(resume)
            with atomic_path(write_dir / "model.keras") as tmp:  # never a truncated model.keras for evaluate to load
                model.save(tmp)
            atomic_write_text(write_dir / "history.csv", merged.to_csv(index=False, lineterminator="\n"))
            atomic_write_bytes(write_dir / "curves.png", plot_history(merged))
            atomic_write_text(write_dir / "weights.json", weights.to_json())
            info.write(write_dir)
            save_resolved({"train": params, "augment": augment}, write_dir)
            shutil.rmtree(resume, ignore_errors=True)
    # The stage's own work, without process start-up, imports or tracking: what benchmarks/mlops_overhead.py
    # subtracts from the `dvc repro` time to tell the MLOps layer's cost.
    log.info("train: %d epochs trained, outputs written in %.1f s", len(merged), time.perf_counter() - started)
    return TrainResult(write_dir / "model.keras", merged, weights, info)


def train_tracked(params: Params, data_dir: Path, split_dir: Path, out_dir: Path) -> TrainResult:
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
    client = tracking.connect(consequence="nothing was trained: rerun `visionops train` once it answers")
    t = params.train
    name = params.tracking.run_name or tracking.default_run_name(t, split_dir)
    resume = resume_dir(Path(out_dir), t, params.augment, SplitInfo.read(split_dir).split_id) / "mlflow_run_id"
    run = tracking.start_run(client, params.tracking.experiment, name, {"stage": "train"}, resume)
    try:
        with tracking.system_metrics(run.run_id):
            result = train(data_dir, split_dir, t, params.augment, out_dir, tracking.live_metrics(client, run.run_id))
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run.run_id, "FAILED")
        raise
    run.write(out_dir)

    def log() -> None:
        tracking.log_training(client, run.run_id, params, project_root(), Path(out_dir), Path(split_dir))

    warning = tracking.logged_or_warning("the training", log)
    return replace(result, run=run, warnings=[warning] if warning else [])
