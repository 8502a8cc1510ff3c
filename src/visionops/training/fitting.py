"""Fitting a model in two stages with per-epoch backups: batches, compile, fit, resume, the merged history.

The train stage drives these. A killed run resumes where it stopped: each epoch is backed up under
``artifacts/.resume/<config and split key>/`` (Keras ``BackupAndRestore``), a finished stage's weights are kept
there and loaded instead of fitted again, and both stages' per-epoch logs merge into one history.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import h5py  # (Keras' own dependency: its weights files are HDF5)
import keras
import pandas as pd
import tensorflow as tf

from visionops.config import AugmentStep, RuntimeParams, StageParams, TrainParams
from visionops.contracts.model import ModelInfo
from visionops.data.cache import cache_dir_for, cache_images
from visionops.data.dataset import Batches, Variation, balanced_class_weights
from visionops.files import atomic_path, dump_json
from visionops.progress import keras_verbose
from visionops.training.model import freeze_for_stage

log = logging.getLogger(__name__)


def learning_rate(stage: StageParams, steps_per_epoch: int) -> float | keras.optimizers.schedules.CosineDecay:
    """The stage's learning rate per step: an optional linear warm-up from 0, then constant or a cosine decay to 0.

    Per step rather than per epoch, because from-scratch training with few epochs (the sample's) would otherwise
    take its first whole epoch at the peak rate, where the randomly initialised network is least stable.
    """
    total = stage.epochs * steps_per_epoch
    # At most half the stage, so a quick run (`-S train.finetune.epochs=1`) needs no second override.
    warmup = min(round(stage.warmup_epochs * steps_per_epoch), total // 2)
    if stage.schedule == "constant" and not warmup:
        return stage.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else stage.learning_rate,
        decay_steps=max(1, total - warmup),
        alpha=1.0 if stage.schedule == "constant" else 0.0,  # alpha: the floor, as a share of the peak
        warmup_target=stage.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(
    params: TrainParams, rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Optimizer:
    """``train.optimizer`` at ``rate``; decoupled weight decay skips biases and normalisation scales/offsets.

    Decaying BatchNormalization's gamma/beta or a bias only shrinks them towards 0 without regularising anything
    (they scale no input), the usual exclusion in from-scratch recipes.
    """
    decay = params.weight_decay or None
    optimizer: keras.optimizers.Optimizer
    if params.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, weight_decay=decay)
    elif params.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=params.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(rate)
    if decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_for_stage(
    model: keras.Model, stage: StageParams, steps_per_epoch: int, *, params: TrainParams, xla: bool
) -> None:
    """Compile for one fine-tuning stage (recompiling after the trainable flags changed), with a fresh optimizer
    whose rate follows the stage's schedule over ``steps_per_epoch`` × the stage's epochs.

    The optimizer's variables must live under the strategy the model was built in, or fit refuses to mix them.
    """
    with model.distribute_strategy.scope():
        model.compile(
            optimizer=make_optimizer(params, learning_rate(stage, steps_per_epoch)),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
            metrics=["accuracy"],
            jit_compile=xla,
        )


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


def make_batches(
    data_dir: Path,
    lists: dict[str, pd.DataFrame],
    info: ModelInfo,
    *,
    params: TrainParams,
    runtime: RuntimeParams,
    pipeline: A.Compose,
    batch_size: int,
    cache_root: Path,
) -> tuple[Batches, Batches | None]:
    """Training and validation batches of the images of ``lists`` (each worker makes the same ones).

    Args:
        data_dir: the image root the lists' paths are relative to.
        lists: the split's ``train`` and ``val`` lists.
        info: the model's classes, input size and cached side.
        params: the ``train`` section (task, seed, crops, class weights); runtime: where images are cached, threads.
        pipeline: the training augmentation; batch_size: the global batch.
        cache_root: where a disk cache goes (``artifacts/.cache``).
    """
    side, classes = info.resize_side, info.classes
    count = len(lists["train"]) + len(lists["val"])
    cache_dir = cache_dir_for(runtime.cache, count, side, disk_dir=cache_root)
    images = {s: cache_images([data_dir / p for p in lists[s]["path"]], side, cache_dir) for s in ("train", "val")}
    labels = {s: info.labels(list(lists[s]["label"])) for s in ("train", "val")}
    weighting = (
        balanced_class_weights(labels["train"], len(classes))
        if params.class_weights and params.task == "classification"
        else None
    )
    variation = Variation(augment=pipeline, crop_scale=params.crop_scale, class_weights=weighting)
    shape: dict[str, Any] = {
        "num_classes": len(classes),
        "size": info.image_size,
        "batch_size": batch_size,
        "task": params.task,
    }
    train_batches = Batches(
        images["train"], labels["train"], **shape, seed=params.seed, workers=runtime.workers, variation=variation
    )
    val_batches = Batches(images["val"], labels["val"], **shape, seed=params.seed) if len(lists["val"]) else None
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


def fit_stage(
    model: keras.Model,
    stage: int,
    epochs: int,
    *,
    data: Callable[[], tuple[keras.utils.PyDataset, keras.utils.PyDataset | None]],
    resume: Path,
    out_dir: Path,
    patience: int,
    min_delta: float = 0.0,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> None:
    """Fit one fine-tuning stage with per-epoch backups, or load its weights when an earlier run finished it.

    Args:
        model: what the stage trains (the classifier, or its head alone on features).
        stage: 1 or 2; epochs: the stage's epochs (0: nothing is fitted, the weights are kept as they are).
        data: makes the (training, validation) batches; called only when the stage really fits.
        resume: the run's resume folder; out_dir: where TensorBoard logs go.
        patience: early stopping's epochs without a validation loss better by ``min_delta`` (the best epoch's
            weights are kept).
        callbacks: run after the stage's own (backups, the CSV history, early stopping, TensorBoard).
    """
    done = resume / f"stage{stage}.weights.h5"
    if done.is_file():
        log.info("stage %d finished in an earlier run: loading %s", stage, done)
        model.load_weights(done)
        return
    if epochs:
        drop_unreadable_backup(resume / f"stage{stage}-backup", stage)
        train_batches, val_batches = data()
        monitor = "val_loss" if val_batches is not None else "loss"
        model.fit(
            train_batches,
            validation_data=val_batches,
            epochs=epochs,
            shuffle=False,
            verbose=keras_verbose(),
            callbacks=[
                keras.callbacks.BackupAndRestore(str(resume / f"stage{stage}-backup")),
                keras.callbacks.CSVLogger(str(resume / f"stage{stage}-history.csv"), append=True),
                keras.callbacks.EarlyStopping(
                    monitor, patience=patience, min_delta=min_delta, restore_best_weights=True
                ),
                keras.callbacks.TensorBoard(str(out_dir / "tensorboard" / f"stage{stage}")),
                *(callbacks or []),
            ],
        )
    with atomic_path(done) as tmp:
        model.save_weights(tmp)


@dataclass
class StageFitting:
    """Fits a training's stages one after the other into one resume folder, one history and one epoch axis."""

    model: keras.Model  # the whole classifier: its trainable flags are set per stage
    resume: Path
    out_dir: Path  # where TensorBoard logs go
    params: TrainParams
    frozen_batchnorm: bool
    xla: bool
    on_epoch: EpochListener | None = None

    def fit(
        self,
        stage: int,
        fitted: keras.Model,
        settings: StageParams,
        *,
        data: Callable[[], tuple[keras.utils.PyDataset, keras.utils.PyDataset | None]],
        steps_per_epoch: int,
    ) -> None:
        """Freeze for ``stage``, compile ``fitted`` (the classifier, or its head alone) at the stage's schedule over
        ``steps_per_epoch``, and fit it on ``data()``, or load the stage's weights when an earlier run finished it."""
        freeze_for_stage(
            self.model, stage, self.params.finetune.unfreeze_blocks, freeze_batchnorm=self.frozen_batchnorm
        )
        compile_for_stage(fitted, settings, steps_per_epoch, params=self.params, xla=self.xla)
        live = [epoch_reporter(self.on_epoch, stage, self.resume)] if self.on_epoch else []
        fit_stage(
            fitted,
            stage,
            settings.epochs,
            data=data,
            resume=self.resume,
            out_dir=self.out_dir,
            patience=self.params.early_stopping_patience,
            min_delta=self.params.early_stopping_min_delta,
            callbacks=live,
        )


def drop_unreadable_backup(backup: Path, stage: int) -> None:
    """Remove a per-epoch backup that cannot be read back, so the stage starts again instead of failing.

    Keras writes its backup in place: a disk that fills up (or a kill) while it is written leaves a torn HDF5 file,
    and loading it stopped every rerun (``Unable to synchronously open file (bad object header version number)``).
    Every dataset is read here, before Keras loads anything, so a torn file never half-loads into the model.
    """
    weights = backup / "latest.weights.h5"
    if not weights.is_file():
        return

    def read(_: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(weights, "r") as f:
            f.visititems(read)
    except Exception as exc:  # noqa: BLE001 - whatever HDF5 says, the file cannot be trusted
        log.warning("stage %d's backup %s cannot be read (%s): the stage starts again", stage, weights, exc)
        shutil.rmtree(backup)


EpochListener = Callable[[int, dict[str, float]], None]  # (global epoch, that epoch's metrics and stage)


def epoch_reporter(listener: EpochListener, stage: int, resume: Path) -> keras.callbacks.Callback:
    """A callback passing each finished epoch of ``stage`` to ``listener`` on the run's one epoch axis.

    The axis is the merged :func:`history`'s: stage 2's first epoch follows the epochs stage 1 really ran (early
    stopping may end it sooner), and a resumed stage continues its numbering; so a point reported live has the step
    the final history gives it.
    """
    offset = len(history(resume)) if stage > 1 else 0

    def report(epoch: int, logs: dict | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        listener(offset + epoch, {**values, "stage": float(stage)})

    return keras.callbacks.LambdaCallback(on_epoch_end=report)


def resume_dir(out_dir: Path, params: TrainParams, augment: list[AugmentStep], *, split_id: str) -> Path:
    """Where a run keeps its per-epoch backups: one folder per config and split, so anything else starts fresh."""
    config = dump_json({"train": params.model_dump(mode="json"), "augment": [a.model_dump() for a in augment]})
    key = hashlib.sha256((config + split_id).encode()).hexdigest()[:16]
    return Path(out_dir).parent / ".resume" / f"train-{key}"


def history(resume: Path) -> pd.DataFrame:
    """Both stages' per-epoch logs on one continuous epoch axis (a resumed epoch logged twice counts once)."""
    frames, offset = [], 0
    for stage in (1, 2):
        path = resume / f"stage{stage}-history.csv"
        # (Empty when the disk filled up or a kill came before Keras' CSVLogger wrote its header: no epoch logged.)
        if not path.is_file() or path.stat().st_size == 0:
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
