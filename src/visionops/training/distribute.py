"""Where training runs: tf.distribute strategies, the CPU split, mixed precision and XLA, and multi-worker TF_CONFIG.

One place for everything device-related, so the train stage only asks for a strategy, and the Keras multi-worker
patch (keras-team/keras#20585) can be deleted here, and only here, once Keras fixes it.

* :func:`distribution_strategy`: MultiWorkerMirroredStrategy when TF_CONFIG is set (or derived from a Kubernetes
  Indexed Job), MirroredStrategy over ``VISIONOPS_DEVICES`` or several visible GPUs, else the default strategy.
* :func:`configure_precision`: mixed_float16 and XLA on a GPU, float32 without XLA on a CPU.
* TF_CONFIG from where a pod runs: a Kubernetes Indexed Job gives each pod ``JOB_COMPLETION_INDEX`` (0…N-1) and the
  hostname ``<job-name>-<index>``; with ``subdomain`` set to a headless Service, every pod is reachable at
  ``<job-name>-<i>.<service>``. From that and the worker count, :func:`tf_config_from_env` writes the cluster spec.
  Worker 0 is the chief: it writes the outputs and runs the later stages (deploy/k8s-multiworker-job-template.json).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from visionops.config import ConfigError

DEFAULT_PORT = 12345
HOSTS_ENV = "VISIONOPS_WORKER_HOSTS"  # explicit "host:port,host:port" list: wins over the derived one
COUNT_ENV = "VISIONOPS_WORKERS"  # the worker count N (the Indexed Job's completions)
SERVICE_ENV = "VISIONOPS_WORKER_SERVICE"  # the headless Service named as the pods' subdomain
PORT_ENV = "VISIONOPS_WORKER_PORT"


def tf_config(hosts: list[str], index: int) -> dict:
    """The TF_CONFIG of worker ``index`` in a cluster of ``hosts`` (``host:port`` each; worker 0 is the chief).

    Raises:
        ConfigError: no hosts, a host without a port, a duplicate, or an index outside the list.
    """
    if not hosts:
        raise ConfigError(f"{HOSTS_ENV}: no worker hosts given; list them as host:port,host:port")
    for host in hosts:
        if not host.rpartition(":")[2].isdigit():
            raise ConfigError(f"{HOSTS_ENV}: '{host}' has no port; write it as host:port")
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"{HOSTS_ENV}: a host is listed twice in {hosts}")
    if not 0 <= index < len(hosts):
        raise ConfigError(f"JOB_COMPLETION_INDEX={index} is outside 0..{len(hosts) - 1} ({len(hosts)} workers)")
    return {"cluster": {"worker": list(hosts)}, "task": {"type": "worker", "index": index}}


def worker_hosts(env: Mapping[str, str]) -> list[str]:
    """The workers' ``host:port`` list: ``VISIONOPS_WORKER_HOSTS``, or derived from the Indexed Job's pod names.

    Raises:
        ConfigError: a variable is missing or malformed; the message names it.
    """
    if env.get(HOSTS_ENV):
        return [h.strip() for h in env[HOSTS_ENV].split(",") if h.strip()]
    for name in (COUNT_ENV, SERVICE_ENV, "HOSTNAME"):
        if not env.get(name):
            raise ConfigError(f"{name} is not set: it is needed to derive the worker hosts (or set {HOSTS_ENV})")
    if not env[COUNT_ENV].isdigit() or int(env[COUNT_ENV]) < 1:
        raise ConfigError(f"{COUNT_ENV}={env[COUNT_ENV]!r}: give the number of workers, a positive integer")
    port = env.get(PORT_ENV, str(DEFAULT_PORT))
    # An Indexed Job names its pods' hosts <job-name>-<index>; the job name has a random suffix (generateName).
    job = env["HOSTNAME"].rsplit("-", 1)[0]
    return [f"{job}-{i}.{env[SERVICE_ENV]}:{port}" for i in range(int(env[COUNT_ENV]))]


def tf_config_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """TF_CONFIG (JSON) for this pod, or None outside a multi-worker job (no ``JOB_COMPLETION_INDEX`` or N = 1).

    Raises:
        ConfigError: the job's variables are inconsistent; the message names the variable.
    """
    env = os.environ if env is None else env
    index = env.get("JOB_COMPLETION_INDEX")
    if index is None or (not env.get(HOSTS_ENV) and env.get(COUNT_ENV, "1") == "1"):
        return None
    if not index.isdigit():
        raise ConfigError(f"JOB_COMPLETION_INDEX={index!r} is not a number")
    return json.dumps(tf_config(worker_hosts(env), int(index)))


def export_tf_config() -> None:
    """Set TF_CONFIG from the pod's environment unless it is set already (an explicit TF_CONFIG wins)."""
    if not os.environ.get("TF_CONFIG"):
        config = tf_config_from_env()
        if config:
            os.environ["TF_CONFIG"] = config


DEVICES_ENV = "VISIONOPS_DEVICES"  # e.g. "GPU:0,GPU:2", or "CPU:0,CPU:1" to rehearse MirroredStrategy on a laptop


def distribution_strategy(devices: list[str] | None = None) -> tf.distribute.Strategy:
    """The tf.distribute strategy to build and fit the model under.

    MultiWorkerMirroredStrategy when TF_CONFIG is set (or can be derived from a Kubernetes Indexed Job, see
    :func:`tf_config_from_env`); else MirroredStrategy over ``devices`` (default: ``$VISIONOPS_DEVICES``) when it
    lists several; else MirroredStrategy over all visible GPUs when there are several; else the default strategy.
    Listing ``CPU:0,CPU:1`` splits the CPU into logical devices, so the multi-GPU code path runs without a GPU;
    that must happen before TensorFlow initialises (before any tensor is made).

    Raises:
        ConfigError: ``devices`` asks for logical CPUs after TensorFlow has initialised.
    """
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

    def build_from_local_batch(self: keras.Model, iterator: Any = None, data_batch: Any = None) -> None:
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
    names = {
        "MultiWorkerMirroredStrategy": tf.distribute.MultiWorkerMirroredStrategy,
        "MirroredStrategy": tf.distribute.MirroredStrategy,
    }
    return next((name for name, cls in names.items() if isinstance(strategy, cls)), "default")


def strategy_info(strategy: tf.distribute.Strategy) -> dict:
    """Strategy name, replica and worker counts, this worker's index, and whether it is the chief (which writes)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    workers, chief, index = 1, True, 0
    if resolver is not None and task_type:
        index = resolver.task_id or 0
        cluster = resolver.cluster_spec().as_dict()
        workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
        # TensorFlow's convention: the "chief" task, or worker 0 when the cluster names no chief.
        chief = task_type == "chief" or (task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster)
    return {
        "strategy": _strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "workers": workers,
        "chief": chief,
        "worker_index": index,
    }


def configure_precision() -> dict[str, bool]:
    """On a GPU: mixed_float16 and XLA. On CPU both stay off (XLA made B0 ~6x slower on CPU here)."""
    gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "float32")
    return {"gpu": gpu, "mixed_precision": gpu, "xla": gpu}
