"""The pipeline as a user runs it: restore the sample from the in-repo DVC remote, `dvc repro`, then again."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_pull_repro_then_nothing_to_do(project_copy: Path) -> None:
    assert not (project_copy / "data").exists()
    run(["dvc", "pull", "data.dvc"], cwd=project_copy)  # what `./run.sh pipeline` does on a fresh clone
    assert len(list((project_copy / "data").rglob("*.jpg"))) >= 300
    first = run(["dvc", "repro"], cwd=project_copy).stdout
    assert "Running stage 'validate'" in first and "Running stage 'split'" in first

    summary = json.loads((project_copy / "artifacts/validate/summary.json").read_text())
    assert summary["quarantined"] == 0 and len(summary["classes"]) >= 4
    assert (project_copy / "artifacts/validate/data_docs/index.html").is_file()
    split = json.loads((project_copy / "artifacts/split/split.json").read_text())
    total = sum(split["totals"].values())
    assert total == summary["usable"]
    assert 0.15 < split["totals"]["test"] / total < 0.25
    train = pd.read_csv(project_copy / "artifacts/split/train.csv")
    assert (project_copy / "data" / train["path"].iloc[0]).is_file(), "lists hold paths relative to data/"

    second = run(["dvc", "repro"], cwd=project_copy).stdout
    assert "Running stage" not in second and "Data and pipelines are up to date" in second
    status = run(["dvc", "status", "--json"], cwd=project_copy).stdout
    assert json.loads(status) == {}
    committed = run(["git", "diff", "--name-only"], cwd=project_copy).stdout
    assert committed == "", f"a repro of the committed pipeline changed tracked files: {committed}"

    # A split param reruns split only; dvc exp records it without touching params.yaml in the workspace's git.
    exp = run(["dvc", "exp", "run", "-S", "split.test_ratio=0.3"], cwd=project_copy).stdout
    assert "Stage 'validate' didn't change, skipping" in exp and "Running stage 'split'" in exp
    shown = json.loads(run(["dvc", "exp", "show", "--json"], cwd=project_copy).stdout)
    assert shown, "the experiment is listed by dvc exp show"


def test_invalid_params_fail_the_stage_with_the_key(project_copy: Path) -> None:
    run(["dvc", "pull", "-q", "data.dvc"], cwd=project_copy)
    params = project_copy / "params.yaml"
    params.write_text(params.read_text().replace("min_side:", "min_sidee:"))
    proc = run(["dvc", "repro"], cwd=project_copy, check=False)
    assert proc.returncode != 0
    assert "validate.min_sidee: unknown key. Did you mean 'min_side'?" in proc.stderr + proc.stdout
