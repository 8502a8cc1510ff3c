"""params.yaml: generated from the typed defaults (one source), and read by DVC so that only model params retrain.

`runtime` settings (threads, cache placement, the inference batch, the lock timeout) cannot change a result, so no
stage lists them: changing one must leave every stage up to date, where changing a model param must not. Checked
with `dvc status` itself on a copy of the pipeline's files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import REPO, tool_env

from visionops.config import Params, RuntimeParams
from visionops.params import load_params, render


def test_the_committed_params_yaml_is_the_defaults_rendered() -> None:
    assert (REPO / "params.yaml").read_text() == render(), (
        "params.yaml and the defaults in src/visionops/config.py differ: change the default there and regenerate the "
        "file (`visionops params --defaults > params.yaml`); try a value with `dvc exp run -S key=value` instead"
    )


def test_the_rendered_file_reads_back_as_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(render())
    assert load_params(path) == Params()
    changed = Params.model_validate({"train": {"seed": 7}, "runtime": {"workers": 5}})
    path.write_text(render(changed))
    assert load_params(path) == changed, "any params, not only the defaults, survive the round trip"


def _changed_params(project: Path) -> dict[str, set[str]]:
    """Per stage, the params.yaml sections `dvc status` reports as changed against dvc.lock."""
    done = subprocess.run(
        ["dvc", "status", "--json"], cwd=project, env=tool_env(), capture_output=True, text=True, check=True
    )
    found: dict[str, set[str]] = {}
    for stage, changes in json.loads(done.stdout or "{}").items():
        for change in changes:
            params = change.get("changed deps", {}).get("params.yaml", {}) if isinstance(change, dict) else {}
            if params:
                found.setdefault(stage, set()).update(params)
    return found


@pytest.fixture(scope="module")
def pipeline_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("status")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, project / name)
    # dvc.lock as the last `dvc repro` with these params would write it (whether or not the committed one is current)
    lock, params = yaml.safe_load((REPO / "dvc.lock").read_text()), yaml.safe_load((REPO / "params.yaml").read_text())
    for record in lock["stages"].values():
        for section in record.get("params", {}).get("params.yaml", {}):
            record["params"]["params.yaml"][section] = params[section]
    (project / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    (project / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", project / ".dvc" / "config")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    return project


def _with(project: Path, key: str, value: object) -> dict[str, set[str]]:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    section, _, name = key.partition(".")
    raw[section][name] = value
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return _changed_params(project)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("runtime.workers", 7),
        ("runtime.cache", "disk"),
        ("runtime.inference_batch_size", 3),
        ("runtime.lock_timeout_s", 60),
        ("tracking.experiment", "elsewhere"),
    ],
)
def test_a_setting_that_cannot_change_a_result_reruns_nothing(pipeline_copy: Path, key: str, value: object) -> None:
    assert _with(pipeline_copy, "runtime.workers", RuntimeParams().workers) == {}, "the lock matches the file"
    assert _with(pipeline_copy, key, value) == {}


@pytest.mark.parametrize(
    ("key", "value", "stage"),
    [
        ("train.seed", 7, "train"),
        ("evaluate.top_k", 3, "evaluate"),
        ("promote.min_delta", 0.5, "promote"),
        ("split.seed", 7, "split"),
        ("validate.min_side", 64, "validate"),
    ],
)
def test_a_model_param_makes_its_stage_stale(pipeline_copy: Path, key: str, value: object, stage: str) -> None:
    assert _with(pipeline_copy, key, value) == {stage: {key.split(".")[0]}}
