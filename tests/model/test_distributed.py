"""Distributed training on CPU: MirroredStrategy over two logical CPUs and MultiWorkerMirroredStrategy across two
processes on 127.0.0.1 train exactly like one device with the same global batch; only the chief writes.

Each run is a fresh process (tests/model/distributed_worker.py), since logical devices and TF_CONFIG must be set
before TensorFlow initialises. All runs of the comparison start together and are killed by PID on a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, cli, free_port, spawn, stop_group, tiny_project, tool_env

from visionops.config import ConfigError
from visionops.training.distribute import tf_config_from_env

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("distributed_worker.py")
ATOL = 1e-6  # float32 round-off of a different summation order; measured ≤ 6e-8 on weights and losses
TIMEOUT = 240


def _start(root: Path, name: str, **env: str) -> tuple[subprocess.Popen, Path]:
    cmd = [sys.executable, str(WORKER), str(root / name), str(root / f"{name}.json")]
    proc = spawn(cmd, root / f"{name}.log", {"TF_CPP_MIN_LOG_LEVEL": "2", **env}, cwd=root)
    return proc, root / f"{name}.json"


def _wait_all(root: Path, procs: dict[str, subprocess.Popen]) -> None:
    """Wait for every process; on a timeout or failure kill them all (a lone worker would wait for its peer)."""
    try:
        for name, proc in procs.items():
            if proc.wait(timeout=TIMEOUT) != 0:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{(root / f'{name}.log').read_text()[-3000:]}")
    finally:
        for proc in procs.values():
            stop_group(proc, signal.SIGKILL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """One device (global batch 8), MirroredStrategy on CPU:0+CPU:1, and two workers (4 per replica each)."""
    root = tmp_path_factory.mktemp("distributed")
    hosts = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    started = {
        "single": _start(root, "single"),
        "mirrored": _start(root, "mirrored", VISIONOPS_DEVICES="CPU:0,CPU:1"),
        **{
            f"worker{i}": _start(
                root, f"worker{i}", VISIONOPS_WORKER_HOSTS=",".join(hosts), JOB_COMPLETION_INDEX=str(i)
            )
            for i in range(2)
        },
    }
    _wait_all(root, {name: proc for name, (proc, _) in started.items()})
    return root, {name: json.loads(report.read_text()) for name, (_, report) in started.items()}


def _history(report: dict) -> np.ndarray:
    lines = report["history"].strip().splitlines()
    columns = lines[0].split(",")
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    return rows[:, [columns.index("loss"), columns.index("val_loss")]]


def _assert_same_training(report: dict, reference: dict) -> None:
    assert len(report["weights"]) == len(reference["weights"]) == 4, "conv and dense kernels and biases"
    for got, want in zip(report["weights"], reference["weights"], strict=True):
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=ATOL)
    assert _history(report).shape == (3, 2)
    np.testing.assert_allclose(_history(report), _history(reference), rtol=0, atol=ATOL)


def test_mirrored_over_two_logical_cpus_trains_like_one_device(runs) -> None:
    _, reports = runs
    single, mirrored = reports["single"], reports["mirrored"]
    assert (single["strategy"], single["replicas"], single["batch"]) == ("default", 1, 8)
    assert (mirrored["strategy"], mirrored["replicas"], mirrored["batch"]) == ("MirroredStrategy", 2, 8), (
        "train.batch_size is per replica: 4 on each of 2 replicas makes the reference's global batch of 8"
    )
    _assert_same_training(mirrored, single)
    assert not np.allclose(single["weights"][0], 0), "the reference trained"


def test_two_workers_train_like_one_worker_and_only_the_chief_writes(runs) -> None:
    root, reports = runs
    chief, other = reports["worker0"], reports["worker1"]
    for index, report in enumerate((chief, other)):
        assert (report["strategy"], report["workers"], report["replicas"]) == ("MultiWorkerMirroredStrategy", 2, 2)
        assert (report["worker_index"], report["chief"], report["batch"]) == (index, index == 0, 8)
        _assert_same_training(report, reports["single"])
    assert sorted(p.name for p in (root / "worker0").iterdir()) == ["history.csv", "tensorboard", "weights.json"]
    assert not (root / "worker1").exists(), "the non-chief wrote into its output folder"
    assert not Path(other["write_dir"]).exists(), "the non-chief's temporary output folder was not removed"
    assert (root / ".resume-worker1-worker1" / "stage1-history.csv").is_file(), "non-chief keeps its own backups"


def test_tf_config_from_an_indexed_job() -> None:
    env = {
        "JOB_COMPLETION_INDEX": "1",
        "VISIONOPS_WORKERS": "3",
        "VISIONOPS_WORKER_SERVICE": "visionops-workers",
        "HOSTNAME": "train-x7k2p-1",
    }
    config = json.loads(tf_config_from_env(env))
    hosts = [f"train-x7k2p-{i}.visionops-workers:12345" for i in range(3)]
    assert config == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": 1}}
    explicit = {"JOB_COMPLETION_INDEX": "0", "VISIONOPS_WORKER_HOSTS": "a:1, b:2"}
    assert json.loads(tf_config_from_env(explicit))["cluster"]["worker"] == ["a:1", "b:2"]
    assert tf_config_from_env({"JOB_COMPLETION_INDEX": "0", "VISIONOPS_WORKERS": "1"}) is None, "one worker: no cluster"
    assert tf_config_from_env({"VISIONOPS_WORKERS": "2"}) is None, "not in an Indexed Job"
    with pytest.raises(ConfigError, match="VISIONOPS_WORKER_SERVICE"):
        tf_config_from_env({"JOB_COMPLETION_INDEX": "0", "VISIONOPS_WORKERS": "2", "HOSTNAME": "j-0"})
    with pytest.raises(ConfigError, match=r"outside 0\.\.1"):
        tf_config_from_env({**explicit, "JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(ConfigError, match="no port"):
        tf_config_from_env({**explicit, "VISIONOPS_WORKER_HOSTS": "a,b:2"})


@pytest.mark.skipif(
    not os.environ.get("VISIONOPS_TEST_B0_MIRRORED"),
    reason="≈ 2 min on 2 cores: set VISIONOPS_TEST_B0_MIRRORED=1 to run the real train stage under MirroredStrategy",
)
def test_real_train_stage_under_mirrored_strategy(tmp_path: Path) -> None:
    """`visionops train --no-track` (the stage without MLflow) trains and saves B0 on two logical CPUs."""
    params = (
        "train: {image_size: 32, weights: null, batch_size: 4, model: EfficientNetB0, head: {epochs: 1}, "
        "finetune: {epochs: 1}}\naugment: [{name: HorizontalFlip, p: 0.5}]\n"
    )
    project = tiny_project(tmp_path / "project", params)
    proc = subprocess.run(
        cli("train", "--no-track"),
        cwd=project,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env=tool_env(VISIONOPS_DEVICES="CPU:0,CPU:1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO / "src")),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "training under MirroredStrategy: 2 replica(s) on 1 worker(s), global batch 8" in proc.stderr
    info = json.loads((project / "artifacts/train/classes.json").read_text())
    assert (info["strategy"], info["replicas"], info["batchnorm_frozen"]) == ("MirroredStrategy", 2, False)
    from visionops.training.model import load_trained

    model, _ = load_trained(project / "artifacts/train")
    assert model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0).shape == (2, 3)
    assert not (project / "artifacts/.resume").exists() or not any((project / "artifacts/.resume").iterdir())
