"""TF_CONFIG for multi-worker training, derived from where a pod runs, so nothing is hand-written per pod.

A Kubernetes Indexed Job gives each pod ``JOB_COMPLETION_INDEX`` (0…N-1) and the hostname ``<job-name>-<index>``;
with ``subdomain`` set to a headless Service, every pod is reachable at ``<job-name>-<i>.<service>``. From that and
the worker count, :func:`tf_config_from_env` writes the cluster spec TensorFlow's MultiWorkerMirroredStrategy reads.
Worker 0 is the chief: it writes the outputs and runs the later stages (deploy/k8s-multiworker-job-template.json).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

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
