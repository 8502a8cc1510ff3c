"""Where a run came from: git commit and state, data.dvc hash, split, machine, package versions, its default name."""

from __future__ import annotations

import contextlib
import getpass
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

from visionops.config import TrainParams
from visionops.contracts.data import SplitInfo
from visionops.files import project_root

PACKAGES = (
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "mlflow",
    "dvc",
    "great-expectations",
    "albumentations",
    "opencv-python-headless",
    "prefect",
)


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def lineage(root: Path, split_dir: Path) -> dict[str, str]:
    """Tags that say where a run came from: code, data, split, machine, package versions."""
    data_dvc = root / "data.dvc"
    data_hash = yaml.safe_load(data_dvc.read_text())["outs"][0]["md5"] if data_dvc.is_file() else ""
    tags = {
        "git.commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "git.dirty": str(bool(_git(root, "status", "--porcelain", "--untracked-files=no"))).lower(),
        "data.dvc_md5": data_hash,
        "split_id": SplitInfo.read(split_dir).split_id,
        "hardware.platform": platform.platform(),
        "hardware.cpus": str(os.cpu_count()),
    }
    for package in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            tags[f"version.{package}"] = version(package)
    return tags


def _command() -> str:
    """The command line this process runs, as typed: ``visionops train``, ``python -m visionops.cli train``."""
    program = Path(sys.argv[0])
    name = (
        f"python -m {program.parent.parent.name}.{program.parent.name}"
        if program.name == "__main__.py"
        else program.name
    )
    return " ".join([name, *sys.argv[1:]])


def mlflow_source(root: Path) -> dict[str, str]:
    """MLflow's own tags for where a run came from, which its runs table and run page show as "Source", "User" and
    the commit: the stage as DVC names it (else the command), the user, git's commit, branch and remote.

    MLflow's fluent API sets these itself; runs made with ``MlflowClient.create_run``, as here, get none unless
    they are given. ``mlflow.source.type`` is ``JOB`` inside a Prefect flow run (a deployment), else ``LOCAL``.
    """
    stage = os.environ.get("DVC_STAGE")  # (DVC sets it for every stage command it runs)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # (a container user without a name)
        user = "unknown"
    tags = {
        "mlflow.user": user,
        "mlflow.source.name": f"dvc.yaml:{stage}" if stage else _command(),
        "mlflow.source.type": "JOB" if os.environ.get("PREFECT__FLOW_RUN_ID") else "LOCAL",
    }
    git = {
        "commit": ("rev-parse", "HEAD"),
        "branch": ("branch", "--show-current"),
        "repoURL": ("remote", "get-url", "origin"),
    }
    for key, args in git.items():
        if value := _git(root, *args):
            tags[f"mlflow.source.git.{key}"] = value
    return tags


def default_run_name(params: TrainParams, split_dir: Path) -> str:
    """``<model>-<size>px-<task>-<weights>-<commit>``: what a run is, readable in the runs table."""
    weights = {None: "scratch", "imagenet": "imagenet"}.get(params.weights, "file")
    commit = lineage(project_root(), split_dir)["git.commit"][:7]
    return f"{params.model}-{params.size}px-{params.task}-{weights}-{commit}"
