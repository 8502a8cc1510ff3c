"""The promotion gate with real trained models against a real `mlflow server`: four EfficientNet-Lite0 models
fine-tuned from the installed ImageNet weights on one split of generated sample scenes, each trained on its own
labelling of the same training images, promoted one after the other into one registered model.

- weak: the non-star training labels shuffled among themselves (it knows stars, guesses the rest): champion first;
- no-star: all but two star training images labelled circle (better than weak on average, but loses the stars):
  refused, naming the class;
- good: the true labels: clearly better than weak, promoted;
- good again: the same recipe trained again: indistinguishable from good, which stays champion.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import cli, mark_project, run
from mlflow import MlflowClient

from visionops.config import PromoteParams, SplitParams, ValidateParams
from visionops.data.sample import generate_sample
from visionops.stages.promote import decide
from visionops.stages.split import split
from visionops.stages.validate import validate
from visionops.training.evidence import Evidence

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PARAMS = """
train: {model: EfficientNetLite0, weights: imagenet, image_size: 64, batch_size: 16, seed: 1, class_weights: false,
        head: {epochs: 15, views: 1}, finetune: {epochs: 0}}
augment: []
tracking: {experiment: gate-test}
promote: {registered_model: gate, metric: accuracy, min_metric: null}
"""


def _relabel(lists: Path, change) -> None:
    for side in ("train", "val"):
        table = pd.read_csv(lists / f"{side}.csv")
        table["label"] = change(table["label"].copy())
        table.to_csv(lists / f"{side}.csv", index=False)


def _shuffle_all_but_star(labels: pd.Series) -> pd.Series:
    others = labels != "star"
    labels[others] = np.random.default_rng(0).permutation(labels[others].to_numpy())
    return labels


def _star_as_circle(labels: pd.Series) -> pd.Series:
    stars = labels.index[labels == "star"]
    labels[stars[2:]] = "circle"  # (two stay: the model keeps the class, and barely learns it)
    return labels


@pytest.fixture(scope="module")
def projects(mlflow_module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four trained and evaluated projects, by name."""
    base = tmp_path_factory.mktemp("gate") / "base"
    generate_sample(base / "data", per_class=40, size=64, seed=5)
    validate(base / "data", ValidateParams(min_images_per_class=3), base / "artifacts/validate")
    split(base / "artifacts/validate/manifest.csv", SplitParams(test_ratio=0.3, seed=1), base / "artifacts/split")
    (base / "params.yaml").write_text(PARAMS)
    mark_project(base)
    made = {}
    for name, change in [
        ("weak", _shuffle_all_but_star),
        ("no-star", _star_as_circle),
        ("good", None),
        ("again", None),
    ]:
        root = base.parent / name
        shutil.copytree(base, root)
        if change is not None:
            _relabel(root / "artifacts/split", change)
        for stage in ("train", "evaluate"):
            run(cli(stage), cwd=root, MLFLOW_TRACKING_URI=mlflow_module.uri, timeout=900)
        made[name] = root
    return made


def _promote(project: Path, uri: str) -> dict:
    run(cli("promote"), cwd=project, MLFLOW_TRACKING_URI=uri)
    return json.loads((project / "artifacts/promote/decision.json").read_text())


def _asked(decision: dict) -> str:
    """What the rule says for the evidence the decision recorded."""
    evidence = Evidence(**{k: v for k, v in decision["evidence"].items() if k != "resamples"})
    rule = PromoteParams.model_validate(decision["params"])
    return decide(decision["score"], decision["champion_score"], rule, pretrained=True, evidence=evidence).action


def test_the_gate_promotes_on_evidence_and_refuses_a_lost_class(mlflow_module, projects) -> None:
    uri = mlflow_module.uri
    first = _promote(projects["weak"], uri)
    assert first["decision"] == "promoted" and first["evidence"] is None, first

    lost = _promote(projects["no-star"], uri)
    assert lost["decision"] == "rejected" and "class 'star'" in lost["reason"], lost
    evidence = lost["evidence"]
    assert evidence["candidate"] > evidence["champion"], "better than the champion on average"
    assert evidence["recall"]["star"][0] < evidence["recall"]["star"][1] - 0.1, evidence["recall"]
    assert _asked(lost) == "rejected"

    better = _promote(projects["good"], uri)
    assert better["decision"] == "promoted" and better["evidence"]["low"] > 0, better
    assert better["evidence"]["images"] == len(pd.read_csv(projects["good"] / "artifacts/split/test.csv"))
    assert better["champion_rescored"] is False, "same split: the champion's predictions came from its run"
    assert _asked(better) == "promoted"

    same = _promote(projects["again"], uri)
    assert same["decision"] == "indistinguishable" and same["evidence"]["low"] <= 0 <= same["evidence"]["high"], same
    assert "the interval includes 0" in same["reason"] and _asked(same) == "indistinguishable"

    client = MlflowClient(uri)
    assert client.get_model_version_by_alias("gate", "champion").version == better["version"]
    assert client.get_model_version_by_alias("gate", "challenger").version == same["version"]
    version = client.get_model_version("gate", same["version"])
    interval = version.tags["decision.interval"]
    assert interval in same["reason"] and interval in version.description, "the model card states the interval"
    listing = json.loads(run(cli("registry", "--json"), cwd=projects["again"], MLFLOW_TRACKING_URI=uri).stdout)
    shown = {row["version"]: (row["decision"], row["gain"]) for row in listing}
    assert shown[same["version"]] == ("indistinguishable", interval), listing
