"""Shared fixtures. Tests never touch the real data/ or artifacts/ folders: everything runs in tmp_path.

The test servers and their fixtures are the plugin tests/servers.py; a folder's own fixtures are in its conftest.py.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["servers"]


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


@pytest.fixture(autouse=True)
def _tracking_uri_stays_in_its_test(monkeypatch: pytest.MonkeyPatch):
    """MLflow copies a tracking URI it is given (``mlflow.set_tracking_uri``, ``tracking.connect``) into
    os.environ, where every later test's subprocesses would inherit a server that no longer runs: reset both."""
    import os
    import sys

    monkeypatch.setenv("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
    if not os.environ["MLFLOW_TRACKING_URI"]:
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)
