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
