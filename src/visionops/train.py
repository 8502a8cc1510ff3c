"""The train stage: two-stage fine-tuning of EfficientNet on the split lists.

Stage 1 trains the head on a frozen backbone; stage 2 unfreezes the backbone's top blocks (BatchNormalization
stays frozen) at a lower learning rate. Every epoch is backed up under ``artifacts/.resume/``, so a killed run
resumes where it stopped when started again with the same config and data; a finished stage is not redone.

Writes into the output folder: model.keras, history.csv, curves.png, classes.json (class names and preprocessing),
weights.json (the initial weights really used), params.json, augment_preview.png and tensorboard/.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from visionops.augment import build_augment, preview_grid
from visionops.config import AugmentStep, TrainParams, save_resolved
from visionops.contracts import read_split
from visionops.dataset import ROTATIONS, Batches, balanced_class_weights, cache_images
from visionops.files import atomic_write_bytes, atomic_write_text, dump_json, write_json
from visionops.model import (
    WeightsUsed,
    batchnorm_frozen,
    build_backbone,
    build_model,
    configure_precision,
    distribution_strategy,
    freeze_for_stage,
    strategy_info,
)
from visionops.plots import plot_history

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What the train stage produced."""

    model_path: Path
    history: pd.DataFrame
    weights: WeightsUsed
    classes: list[str]


def class_names(split_info: dict, task: str) -> list[str]:
    """Output classes: the data's labels (sorted), or the four rotations for the orientation task."""
    return [str(r) for r in ROTATIONS] if task == "orientation" else list(split_info["classes"])


def resize_side(params: TrainParams) -> int:
    """Side of the cached images: the training size plus the crop margin."""
    return round(params.size * params.resize_margin)


def _labels(frame: pd.DataFrame, classes: list[str], task: str) -> list[int]:
    return [0] * len(frame) if task == "orientation" else [classes.index(label) for label in frame["label"]]


def _compile(model: keras.Model, learning_rate: float, params: TrainParams, xla: bool) -> None:
    # The optimizer's variables must live under the strategy the model was built in, or fit refuses to mix them.
    with model.distribute_strategy.scope():
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
            metrics=["accuracy"],
            jit_compile=xla,
        )


def train(
    data_dir: Path, split_dir: Path, params: TrainParams, augment: list[AugmentStep], out_dir: Path
) -> TrainResult:
    """Run the train stage, on one device or under the strategy :func:`distribution_strategy` picks.

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

    Raises:
        ConfigError: bad augmentation, weights or device settings (checked before any data is read).
        WeightsError: ImageNet weights unavailable and ``train.weights_fallback`` is ``stop``.
        FileNotFoundError: the split stage has not run.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    pipeline = build_augment(augment, params.task, params.seed)
    lists, split_info = read_split(split_dir)
    classes = class_names(split_info, params.task)
    strategy = distribution_strategy()  # first: it may split the CPU, which must precede any TensorFlow work
    keras.utils.set_random_seed(params.seed)
    topology = strategy_info(strategy)
    device = {**configure_precision(), **{k: topology[k] for k in ("strategy", "replicas", "workers")}}
    log.info("training under %s: %d replica(s) on %d worker(s), global batch %d", topology["strategy"],
             topology["replicas"], topology["workers"], global_batch_size(params.batch_size, strategy))  # fmt: skip
    with strategy.scope():
        backbone, weights = build_backbone(params)
        frozen_bn = batchnorm_frozen(params.finetune.batchnorm, weights)
        model = build_model(backbone, len(classes), params.dropout, frozen_bn)
        if not frozen_bn:
            sync_batchnorm(model, strategy)
    train_batches, val_batches = _batches(data_dir, out_dir, lists, classes, params, pipeline, strategy)

    resume = resume_dir(out_dir, params, augment, split_info)
    with worker_dirs(out_dir, resume, topology) as (write_dir, resume):
        preview = np.clip(train_batches[0][0][:32], 0, 255).astype(np.uint8)
        atomic_write_bytes(write_dir / "augment_preview.png", cv2.imencode(".png", preview_grid(preview))[1].tobytes())
        for stage, stage_params in ((1, params.head), (2, params.finetune)):
            freeze_for_stage(model, stage, params.finetune.unfreeze_blocks, frozen_bn)
            _compile(model, stage_params.learning_rate, params, device["xla"])
            run_stage(model, stage, stage_params.epochs, train_batches, val_batches, resume, write_dir,
                      params.early_stopping_patience)  # fmt: skip
        history = _history(resume)
        _save_model(model, write_dir)
        atomic_write_text(write_dir / "history.csv", history.to_csv(index=False, lineterminator="\n"))
        atomic_write_bytes(write_dir / "curves.png", plot_history(history))
        atomic_write_text(write_dir / "weights.json", weights.to_json())
        size, side = params.size, resize_side(params)
        info = {"classes": classes, "task": params.task, "model": params.model, "image_size": size, "resize_side": side}
        write_json(write_dir / "classes.json", {**info, "batchnorm_frozen": frozen_bn, **device})
        save_resolved({"train": params, "augment": augment}, write_dir)
        shutil.rmtree(resume, ignore_errors=True)
    return TrainResult(write_dir / "model.keras", history, weights, classes)


def global_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """The examples of one fit step: ``train.batch_size`` per replica × the replicas in sync.

    The learning rate stays as configured: Adam's step size barely depends on the batch size, and a scaled rate
    would need a warm-up to be safe; tune ``learning_rate`` for the global batch if you change the GPU count a lot.
    """
    return batch_size * strategy.num_replicas_in_sync


def sync_batchnorm(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Make trainable BatchNormalization use the global batch's statistics when there are several replicas.

    Per-replica statistics (Keras' default) would make N replicas train differently from one device with the
    same global batch, and worse with small per-replica batches; the synchronised form costs one all-reduce per
    layer and step.
    """
    if strategy.num_replicas_in_sync > 1:
        for layer in model.layers[1].layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True


def _batches(
    data_dir: Path, out_dir: Path, lists: dict, classes: list[str], params: TrainParams, pipeline, strategy
) -> tuple[Batches, Batches | None]:
    """Training and validation batches of the global batch size (each worker makes the same ones)."""
    side, size = resize_side(params), params.size
    cache_dir = out_dir.parent / ".cache" if params.cache == "disk" else None
    images = {s: cache_images([data_dir / p for p in lists[s]["path"]], side, cache_dir) for s in ("train", "val")}
    labels = {s: _labels(lists[s], classes, params.task) for s in ("train", "val")}
    weighting = (
        balanced_class_weights(labels["train"], len(classes))
        if params.class_weights and params.task == "classification" else None
    )  # fmt: skip
    batch = global_batch_size(params.batch_size, strategy)
    common = {"num_classes": len(classes), "size": size, "task": params.task, "seed": params.seed}
    train_batches = Batches(
        images["train"], labels["train"], batch_size=batch, augment=pipeline, training=True,
        class_weights=weighting, workers=params.workers, **common,
    )  # fmt: skip
    val_batches = Batches(images["val"], labels["val"], batch_size=batch, **common) if len(lists["val"]) else None
    return train_batches, val_batches


@contextlib.contextmanager
def worker_dirs(out_dir: Path, resume: Path, topology: dict) -> Iterator[tuple[Path, Path]]:
    """(output folder, resume folder) of this worker; non-chief outputs go to a temporary folder, then removed.

    A non-chief keeps its own resume folder beside the chief's, in case both share a volume: after a restart
    every worker must resume at the same epoch, or their collective ops would not line up.
    """
    if topology["chief"]:
        resume.mkdir(parents=True, exist_ok=True)
        yield Path(out_dir), resume
        return
    resume = resume.with_name(f"{resume.name}-worker{topology['worker_index']}")
    resume.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="visionops-worker-") as tmp:
        yield Path(tmp), resume


def run_stage(
    model: keras.Model, stage: int, epochs: int, train_batches: Batches, val_batches: Batches | None, resume: Path,
    out_dir: Path, patience: int,
) -> None:  # fmt: skip
    """Fit one fine-tuning stage with per-epoch backups, or load its weights when an earlier run finished it."""
    done = resume / f"stage{stage}.weights.h5"
    if done.is_file():
        log.info("stage %d finished in an earlier run: loading %s", stage, done)
        model.load_weights(done)
        return
    if epochs:
        monitor = "val_loss" if val_batches is not None else "loss"
        model.fit(
            train_batches, validation_data=val_batches, epochs=epochs, shuffle=False,
            verbose=1 if sys.stdout.isatty() else 2,
            callbacks=[
                keras.callbacks.BackupAndRestore(str(resume / f"stage{stage}-backup")),
                keras.callbacks.CSVLogger(str(resume / f"stage{stage}-history.csv"), append=True),
                keras.callbacks.EarlyStopping(monitor, patience=patience, restore_best_weights=True),
                keras.callbacks.TensorBoard(str(out_dir / "tensorboard" / f"stage{stage}")),
            ],
        )  # fmt: skip
    model.save_weights(resume / f".stage{stage}.tmp.weights.h5")
    (resume / f".stage{stage}.tmp.weights.h5").replace(done)


def _save_model(model: keras.Model, out_dir: Path) -> None:
    tmp = out_dir / ".model.tmp.keras"
    model.save(tmp)
    tmp.replace(out_dir / "model.keras")  # a killed save never leaves a truncated model.keras for evaluate to load


def resume_dir(out_dir: Path, params: TrainParams, augment: list[AugmentStep], split_info: dict) -> Path:
    """Where a run keeps its per-epoch backups: one folder per config and split, so anything else starts fresh."""
    config = dump_json({"train": params.model_dump(mode="json"), "augment": [a.model_dump() for a in augment]})
    key = hashlib.sha256((config + split_info["split_id"]).encode()).hexdigest()[:16]
    return Path(out_dir).parent / ".resume" / f"train-{key}"


def _history(resume: Path) -> pd.DataFrame:
    """Both stages' per-epoch logs on one continuous epoch axis (a resumed epoch logged twice counts once)."""
    frames, offset = [], 0
    for stage in (1, 2):
        path = resume / f"stage{stage}-history.csv"
        if not path.is_file():
            continue
        frame = pd.read_csv(path).drop_duplicates("epoch", keep="last").sort_values("epoch")
        frame.insert(0, "stage", stage)
        frame["epoch"] = range(offset, offset + len(frame))
        offset += len(frame)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["stage", "epoch", "loss", "accuracy"])
    columns = ["epoch", "stage", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    merged = pd.concat(frames, ignore_index=True)
    return merged[[c for c in columns if c in merged.columns]]
