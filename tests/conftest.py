"""Shared fixtures. Tests never touch the real data/ or artifacts/ folders: everything runs in tmp_path.

The test servers and their fixtures are the plugin tests/servers.py; a folder's own fixtures are in its conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["servers"]


LONG_FIRST = ("e2e", "model")  # the folders whose files take minutes each
OWN_TIERS = ("faults", "docker")  # markers of the tiers that run only when asked for (-m NAME, or a file named)


def _whole_folders(config: pytest.Config) -> bool:
    """The run names no marker expression and only folders (the default suite, or a folder of it)."""
    return not config.option.markexpr and all(Path(arg.split("::")[0]).is_dir() for arg in config.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the `faults` and `docker` tiers out of the default run; order the files long ones first; skip `gpu`
    tests on machines without a GPU (CI, laptops).

    The `faults` tests (servers restarted, disks filled, 16 clients at once: minutes each) run with ``-m faults``,
    the `docker` ones (images built, the compose stack in containers: 17 min cold, 9 cached) with ``-m docker``, or when
    their file or id is named; CI runs both tiers after the default suite (.ci/run). xdist hands out whole files in
    the order made here (pyproject's addopts), so the minutes-long end-to-end and model files start at once on both
    workers and the short ones fill in at the end. A stable sort: the order within a file stays.
    """
    if _whole_folders(config):
        tier = [item for item in items if any(item.get_closest_marker(name) for name in OWN_TIERS)]
        config.hook.pytest_deselected(items=tier)
        items[:] = [item for item in items if item not in tier]
    rank = {folder: i for i, folder in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.parent.name, len(rank)))
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
