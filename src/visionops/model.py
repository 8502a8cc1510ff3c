"""EfficientNet factory: backbone by name, classification head, weights resolution, freeze policy, devices."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import tensorflow as tf

from visionops.config import ConfigError, TrainParams
from visionops.contracts import check_outputs
from visionops.errors import UserError
from visionops.files import sha256_file

log = logging.getLogger(__name__)
SCRATCH_BN_MOMENTUM = 0.9


class UnsafeModelError(UserError, ValueError):
    """A model file carries code (a Lambda layer) and Keras safe_mode refuses it; the CLI shows the message."""


class WeightsError(UserError):
    """The configured weights cannot be loaded and the policy says stop. The message says how to fix it."""


@dataclass(frozen=True)
class WeightsUsed:
    """Which initial weights the backbone really got: recorded for later stages and MLflow."""

    requested: str | None
    used: str  # "imagenet", "random", or "file"
    path: str | None = None
    sha256: str | None = None
    fallback_reason: str | None = None

    def to_json(self) -> str:
        """The record as JSON (weights.json)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def imagenet_cache_file(variant: str) -> Path:
    """Where Keras looks for the variant's ImageNet 'notop' weights before downloading them."""
    match = re.fullmatch(r"EfficientNet(V2)?(\w+)", variant)
    name = f"efficientnetv2-{match.group(2).lower()}" if match.group(1) else f"efficientnet{match.group(2).lower()}"
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home) / "models" / f"{name}_notop.h5"


def _backbone(variant: str, size: int, weights: str | None) -> keras.Model:
    factory = getattr(keras.applications, variant)
    return factory(include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg")


def build_backbone(params: TrainParams) -> tuple[keras.Model, WeightsUsed]:
    """Create the EfficientNet backbone with the weights params ask for, following the fallback policy.

    Raises:
        ConfigError: ``train.weights`` names a file that does not exist.
        WeightsError: ImageNet weights cannot be fetched and ``train.weights_fallback`` is ``stop``.
    """
    requested, size = params.weights, params.size
    if requested is None:
        return _backbone(params.model, size, None), WeightsUsed(requested, "random")
    if requested != "imagenet":
        path = Path(requested).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"params.yaml: train.weights: weights file '{requested}' does not exist. Give the path of a "
                f"{params.model} 'notop' weights file, 'imagenet', or null for random initialisation."
            )
        try:
            model = _backbone(params.model, size, str(path))
        except (ValueError, OSError) as err:
            raise ConfigError(f"params.yaml: train.weights: '{requested}' does not fit {params.model}: {err}") from None
        return model, WeightsUsed(requested, "file", str(path), sha256_file(path))
    try:
        return _backbone(params.model, size, "imagenet"), WeightsUsed(requested, "imagenet")
    except Exception as err:  # noqa: BLE001 - keras.utils.get_file raises a bare Exception when offline
        cache = imagenet_cache_file(params.model)
        reason = (
            f"train.weights=imagenet: cannot fetch the ImageNet weights of {params.model} ({err}). Put the file at "
            f"{cache} (it is read from there before any download), set train.weights to a local weights file, "
            "or set train.weights to null."
        )
        if params.weights_fallback == "stop":
            raise WeightsError(reason + " Or set train.weights_fallback: random to train from scratch.") from None
        log.warning(
            "!" * 78 + "\n%s\nCONTINUING FROM RANDOM INITIALISATION (train.weights_fallback=random).\n" + "!" * 78,
            reason,
        )
        return _backbone(params.model, size, None), WeightsUsed(requested, "random", fallback_reason=reason)


def batchnorm_frozen(policy: str, weights: WeightsUsed) -> bool:
    """Resolve ``train.finetune.batchnorm``: 'auto' freezes BatchNormalization only over pretrained weights."""
    return policy == "frozen" or (policy == "auto" and weights.used != "random")


def build_model(backbone: keras.Model, num_classes: int, dropout: float, freeze_batchnorm: bool = True) -> keras.Model:
    """Backbone + dropout + softmax head.

    With ``freeze_batchnorm`` the backbone is called in inference mode, so BatchNormalization keeps its
    pretrained statistics even when its block is unfrozen (the Keras fine-tuning recipe). The softmax output
    is float32 even under mixed precision, for a numerically stable loss.
    """
    if not freeze_batchnorm:
        # Keras' default momentum (0.99) needs ~500 steps before the moving statistics used at evaluation
        # mean anything; a short run from scratch has fewer, so it would validate on garbage statistics.
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    inputs = keras.Input(backbone.input_shape[1:], name="image")  # float 0–255: the backbone rescales itself
    features = backbone(inputs, training=False) if freeze_batchnorm else backbone(inputs)
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(features)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_classifier")


def block_ids(backbone: keras.Model) -> list[str]:
    """The backbone's block ids in order (``block1`` … ``block7``), read from its layer names."""
    ids = []
    for layer in backbone.layers:
        match = re.match(r"(block\d+)", layer.name)
        if match and match.group(1) not in ids:
            ids.append(match.group(1))
    return ids


def freeze_for_stage(
    model: keras.Model, stage: int, unfreeze_blocks: int | str = "all", freeze_batchnorm: bool = True
) -> None:
    """Set trainable flags for fine-tuning stage 1 (head only) or 2 (top blocks and head).

    In stage 2 the top ``unfreeze_blocks`` blocks (and the final conv) train; with ``freeze_batchnorm`` every
    BatchNormalization layer stays frozen, since small batches would wreck pretrained statistics.
    Recompile after calling this.
    """
    backbone = model.layers[1]
    if stage == 1:
        backbone.trainable = False
        return
    backbone.trainable = True
    ids = block_ids(backbone)
    keep = set(ids) if unfreeze_blocks == "all" else set(ids[-int(unfreeze_blocks) :])
    for layer in backbone.layers:
        match = re.match(r"(block\d+)", layer.name)
        in_top = layer.name.startswith("top_") or (match is not None and match.group(1) in keep)
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = (unfreeze_blocks == "all" or in_top) and not (is_bn and freeze_batchnorm)


DEVICES_ENV = "VISIONOPS_DEVICES"  # e.g. "GPU:0,GPU:2", or "CPU:0,CPU:1" to rehearse MirroredStrategy on a laptop


def distribution_strategy(devices: list[str] | None = None) -> tf.distribute.Strategy:
    """The tf.distribute strategy to build and fit the model under.

    MultiWorkerMirroredStrategy when TF_CONFIG is set (or can be derived from a Kubernetes Indexed Job, see
    :mod:`visionops.cluster`); else MirroredStrategy over ``devices`` (default: ``$VISIONOPS_DEVICES``) when it
    lists several; else MirroredStrategy over all visible GPUs when there are several; else the default strategy.
    Listing ``CPU:0,CPU:1`` splits the CPU into logical devices, so the multi-GPU code path runs without a GPU;
    that must happen before TensorFlow initialises (before any tensor is made).

    Raises:
        ConfigError: ``devices`` asks for logical CPUs after TensorFlow has initialised.
    """
    from visionops.cluster import export_tf_config

    export_tf_config()
    if os.environ.get("TF_CONFIG"):
        _fix_keras_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is None:
        devices = [d.strip() for d in os.environ.get(DEVICES_ENV, "").split(",") if d.strip()]
    if len(devices) > 1:
        _split_cpu(devices)
        return tf.distribute.MirroredStrategy([d if d.startswith("/") else f"/device:{d.upper()}" for d in devices])
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _fix_keras_multi_worker() -> None:
    """Make Keras 3's ``fit`` work under MultiWorkerMirroredStrategy (keras-team/keras#20585, open for Keras 3.15).

    Two reductions in Keras' TensorFlow trainer fail when the strategy spans several workers: the first batch,
    averaged across workers only to learn its shapes (a tuple of per-replica values it cannot reduce), and the
    per-step logs, scalars averaged "along axis 0". This takes the shapes from the local replica and averages the
    scalars over replicas, as MirroredStrategy's path does; tests/model/test_distributed.py checks the result
    against a single-device run. Applied once, only when TF_CONFIG makes a multi-worker run.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_visionops_fixed", False):
        return
    multi_worker, reduce_per_replica = trainer._collective_all_reduce_multi_worker, trainer.reduce_per_replica
    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_logs(values: object, strategy: tf.distribute.Strategy, reduction: str) -> object:
        if reduction == "auto" and multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def build_from_local_batch(self: keras.Model, iterator: object = None, data_batch: object = None) -> None:
        strategy = self.distribute_strategy
        if iterator is not None and multi_worker(strategy):
            _, _, batches = next(iter(iterator))
            data_batch = tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(batches))
            iterator = None
        return symbolic_build(self, iterator=iterator, data_batch=data_batch)

    trainer.reduce_per_replica, trainer._visionops_fixed = reduce_logs, True
    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch


def _split_cpu(devices: list[str]) -> None:
    """Make as many logical CPU devices as ``devices`` names (a no-op when none or one is a CPU)."""
    wanted = sum("CPU" in d.upper() for d in devices)
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu) or []
    if wanted <= max(1, len(current)):
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * wanted)
    except RuntimeError:
        raise ConfigError(
            f"{DEVICES_ENV}={','.join(devices)}: TensorFlow is already initialised, so the CPU cannot be split into "
            f"{wanted} logical devices any more. Set {DEVICES_ENV} before the process starts."
        ) from None


def _strategy_name(strategy: tf.distribute.Strategy) -> str:
    # (TensorFlow's class behind MultiWorkerMirroredStrategy is named CollectiveAllReduceStrategy: use public names.)
    names = {"MultiWorkerMirroredStrategy": tf.distribute.MultiWorkerMirroredStrategy,
             "MirroredStrategy": tf.distribute.MirroredStrategy}  # fmt: skip
    return next((name for name, cls in names.items() if isinstance(strategy, cls)), "default")


def strategy_info(strategy: tf.distribute.Strategy) -> dict:
    """Strategy name, replica and worker counts, this worker's index, and whether it is the chief (which writes)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    workers, chief, index = 1, True, 0
    if task_type:
        index = resolver.task_id or 0
        cluster = resolver.cluster_spec().as_dict()
        workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
        # TensorFlow's convention: the "chief" task, or worker 0 when the cluster names no chief.
        chief = task_type == "chief" or (task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster)
    return {"strategy": _strategy_name(strategy), "replicas": strategy.num_replicas_in_sync, "workers": workers,
            "chief": chief, "worker_index": index}  # fmt: skip


def configure_precision() -> dict[str, bool]:
    """On a GPU: mixed_float16 and XLA. On CPU both stay off (XLA made B0 ~6x slower on CPU here)."""
    gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "float32")
    return {"gpu": gpu, "mixed_precision": gpu, "xla": gpu}


def load_model(path: Path) -> keras.Model:
    """Load a saved model with Keras safe_mode: a file carrying code (Lambda layers) is refused.

    Raises:
        UnsafeModelError: the file holds arbitrary code; the message says why it is refused.
    """
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as err:
        if "safe_mode" in str(err) or "Lambda" in str(err):
            raise UnsafeModelError(
                f"{path}: refused to load, it carries Python code (a Lambda layer) that could run anything. "
                "Only load models you trust, re-saved without Lambda layers."
            ) from None
        raise


def is_model_uri(value: Path | str) -> bool:
    """Whether ``value`` names an MLflow model (``models:/NAME@champion``, ``models:/NAME/3``, ``runs:/ID/model``)."""
    return str(value).startswith(("models:/", "runs:/"))


def load_trained(model: Path | str) -> tuple[keras.Model, dict]:
    """A trained model and its class names, task and input size, checked against each other.

    Args:
        model: model.keras (classes.json beside it), the train stage's folder, or an MLflow model URI such as
            ``models:/NAME@champion``, ``models:/NAME/3`` or ``runs:/RUN_ID/model`` (metadata from its MLmodel).

    Raises:
        FileNotFoundError: no model file, or no classes.json beside it.
        ClassMismatchError: the model's outputs or input size disagree with the class list stored with it.
    """
    if is_model_uri(model):
        from visionops import tracking  # (MLflow: imported only for a model URI)

        with tempfile.TemporaryDirectory(prefix="visionops-model-") as tmp:
            path, info = tracking.fetch_model(str(model), Path(tmp))
            loaded = load_model(path)
    else:
        model = Path(model)
        path = model / "model.keras" if model.is_dir() else model
        info_path = path.parent / "classes.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file; train one with `dvc repro train`")
        if not info_path.is_file():
            raise FileNotFoundError(f"{info_path} not found: the model's class names and input size are stored there")
        loaded, info = load_model(path), json.loads(info_path.read_text())
    check_outputs(loaded.output_shape[-1], loaded.input_shape[1], info, str(model))
    return loaded, info
