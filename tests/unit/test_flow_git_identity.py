"""A flow run's experiment commit needs a git author: the worker's own, or a stated fallback where it has none."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


@pytest.fixture(scope="module")
def git_identity():
    spec = importlib.util.spec_from_file_location("training_pipeline", REPO / "flows/training_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.git_identity


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository on a host whose git knows no user (a fresh container: no ~/.gitconfig, no GIT_* set)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    return tmp_path / "repo"


def test_a_worker_without_a_git_user_commits_as_the_visionops_worker(repo: Path, git_identity) -> None:
    env = git_identity(repo)
    assert env["GIT_AUTHOR_NAME"] == env["GIT_COMMITTER_NAME"] == "visionops worker"
    assert env["GIT_AUTHOR_EMAIL"].startswith("visionops@") and len(env["GIT_AUTHOR_EMAIL"]) > len("visionops@")
    (repo / "f").write_text("x")
    subprocess.run(["git", "add", "f"], cwd=repo, check=True)
    refused = subprocess.run(["git", "commit", "-qm", "m"], cwd=repo, capture_output=True, text=True)
    assert refused.returncode != 0, "this host's git knows no user, so the fallback is needed"
    committed = subprocess.run(["git", "commit", "-qm", "m"], cwd=repo, env=os.environ | env, capture_output=True)
    assert committed.returncode == 0, committed.stderr


def test_the_workers_own_git_user_wins(repo: Path, git_identity, monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run(["git", "config", "user.email", "ana@example.com"], cwd=repo, check=True)
    assert git_identity(repo) == {}
    subprocess.run(["git", "config", "--unset", "user.email"], cwd=repo, check=True)
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "ci@example.com")
    assert git_identity(repo) == {}
