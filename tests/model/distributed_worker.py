"""One training process of tests/model/test_distributed.py: a tiny CNN fitted through visionops' strategy code.

Run as ``python distributed_worker.py OUT_DIR REPORT`` in a fresh process, because the logical CPU devices
(``VISIONOPS_DEVICES``) and the cluster (``TF_CONFIG``) must be set before TensorFlow initialises. It goes through
the project's own path: ``distribution_strategy``, ``global_batch_size``, the ``Batches`` PyDataset (seeded shuffle
and random crops), ``_compile`` (Adam + cross-entropy), ``worker_dirs`` and ``run_stage`` (BackupAndRestore, CSV log).
Every worker writes REPORT (its topology, losses and final weights) so the test can compare the replicas; only
the chief's outputs land in OUT_DIR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np

from visionops.config import StageParams, TrainParams
from visionops.data.dataset import Batches, Variation
from visionops.training.distribute import distribution_strategy, strategy_info
from visionops.training.fitting import compile_for_stage, fit_stage, global_batch_size, worker_dirs

PER_REPLICA = 4  # train.batch_size of the distributed runs; the single-device run uses the same global batch
EPOCHS, SIZE, CLASSES = 3, 8, 3


def data(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Fixed images (10 px, cropped to 8 by Batches) and labels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, SIZE + 2, SIZE + 2, 3), dtype=np.uint8), rng.integers(0, CLASSES, n).tolist()


def tiny_model() -> keras.Model:
    """A few layers, no dropout or BatchNormalization: replicas must be able to agree to float round-off."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(x))


def main(out_dir: Path, report: Path) -> None:
    strategy = distribution_strategy()
    topology = strategy_info(strategy)
    # The single-device reference gets the distributed runs' global batch as its per-replica batch.
    batch = global_batch_size(PER_REPLICA if topology["replicas"] > 1 else 2 * PER_REPLICA, strategy)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tiny_model()
    params = TrainParams.model_validate({"image_size": 32, "weights": None, "batch_size": batch})
    images, labels = data(32, 1)
    val_images, val_labels = data(16, 2)
    common = {"num_classes": CLASSES, "size": SIZE, "batch_size": batch, "seed": 3}
    train_batches = Batches(images, labels, variation=Variation(), **common)
    val_batches = Batches(val_images, val_labels, **common)
    compile_for_stage(
        model, StageParams(epochs=EPOCHS, learning_rate=0.01), len(train_batches), params=params, xla=False
    )
    with worker_dirs(out_dir, out_dir.parent / f".resume-{out_dir.name}", topology) as (write_dir, resume):
        fit_stage(
            model,
            1,
            EPOCHS,
            data=lambda: (train_batches, val_batches),
            resume=resume,
            out_dir=write_dir,
            patience=EPOCHS,
        )
        history = (resume / "stage1-history.csv").read_text()
        weights = [w.tolist() for w in model.get_weights()]
        (write_dir / "weights.json").write_text(json.dumps(weights))
        (write_dir / "history.csv").write_text(history)
    report.write_text(
        json.dumps({**topology, "batch": batch, "write_dir": str(write_dir), "history": history, "weights": weights})
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
