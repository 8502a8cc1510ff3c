"""Fixtures of the end-to-end tests (their servers are in tests/servers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import copy_checkout, git_commit, git_init


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A git repository in tmp_path holding this checkout's files (tracked and new, not ignored), one commit.

    The data/ folder is not copied: tests restore it from the in-repo DVC remote as a fresh clone would.
    """
    dest = copy_checkout(tmp_path / "project")
    git_init(dest)
    git_commit(dest, "copy")
    return dest
