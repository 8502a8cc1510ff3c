"""Shared fixtures. Tests never touch the real data/ or artifacts/ folders: everything runs in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import PG_MISSING, REPO, MlflowServer, PostgresServer, S3Server, postgres_bin, run


@pytest.fixture
def repo_root() -> Path:
    """The project checkout the tests run from."""
    return REPO


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


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A running MLflow tracking server for one test."""
    server = MlflowServer(tmp_path / "mlflow-server").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session (team stack); skips with the install hint where its binaries are absent."""
    if postgres_bin() is None:
        pytest.skip(PG_MISSING)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """An S3 API server (moto, a real process) for the session; tests create their own buckets."""
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()
