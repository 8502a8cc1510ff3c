"""Shared fixtures. Tests never touch the real data/ or artifacts/ folders: everything runs in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    """The project checkout the tests run from."""
    return REPO


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this venv's tools first on PATH, git identity, offline switches."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="tests", GIT_AUTHOR_EMAIL="tests@localhost", GIT_COMMITTER_NAME="tests",
        GIT_COMMITTER_EMAIL="tests@localhost", DVC_NO_ANALYTICS="1", NO_ALBUMENTATIONS_UPDATE="1",
        GX_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600, **env: str):
    """Run a command as a user would, capturing output; on failure show it in the assertion."""
    import subprocess

    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(**env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A git repository in tmp_path holding this checkout's files (tracked and new, not ignored), one commit.

    The data/ folder is not copied: tests restore it from the in-repo DVC remote as a fresh clone would.
    """
    import shutil

    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    dest = tmp_path / "project"
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q", "-b", "main"], cwd=dest)
    run(["git", "add", "-A"], cwd=dest)
    run(["git", "commit", "-q", "-m", "copy"], cwd=dest)
    return dest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests on machines without a GPU (CI, laptops); they run where one is visible."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    skip = pytest.mark.skip(reason="needs a GPU: none is visible to TensorFlow here")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
