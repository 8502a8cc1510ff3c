"""The pipeline as a user runs it: restore the sample from the in-repo DVC remote, `dvc repro`, experiments."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import cli, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = [
    "-S",
    "train.image_size=32",
    "-S",
    "train.head.epochs=1",
    "-S",
    "train.finetune.epochs=1",
    "-S",
    "train.finetune.unfreeze_blocks=1",  # (see helpers.tiny_params)
    "-S",
    "train.batch_size=64",
]
# ROC-AUC is continuous (no ties), and with no margin or floor "the better model is champion" is exact.
RULE = ["-S", "promote.metric=roc_auc_ovr", "-S", "promote.min_delta=0", "-S", "promote.min_metric=0"]


def _ran(output: str) -> set[str]:
    return {s for s in ("validate", "split", "train", "evaluate", "promote") if f"Running stage '{s}'" in output}


def test_pull_repro_experiment_then_nothing_to_do(project_copy: Path, visionops_ui) -> None:
    assert not (project_copy / "data").exists()
    run(cli("pull-data", "--if-absent"), cwd=project_copy)  # what `./run.sh pipeline` does on a fresh clone
    assert len(list((project_copy / "data").rglob("*.jpg"))) >= 300

    first = run(["dvc", "repro", "split"], cwd=project_copy).stdout
    assert _ran(first) == {"validate", "split"}
    committed = run(["git", "diff", "--name-only"], cwd=project_copy).stdout
    assert committed == "", f"the committed dvc.lock is stale for validate/split: {committed}"

    summary = json.loads((project_copy / "artifacts/validate/summary.json").read_text())
    assert summary["quarantined"] == 0 and len(summary["classes"]) >= 4
    assert (project_copy / "artifacts/validate/data_docs/index.html").is_file()
    split = json.loads((project_copy / "artifacts/split/split.json").read_text())
    total = sum(split["totals"].values())
    assert total == summary["usable"] and 0.15 < split["totals"]["test"] / total < 0.25
    train = pd.read_csv(project_copy / "artifacts/split/train.csv")
    assert (project_copy / "data" / train["path"].iloc[0]).is_file(), "lists hold paths relative to data/"

    # Training params reach train, evaluate and promote only; dvc exp records the change.
    exp = run(["dvc", "exp", "run", *TINY, *RULE], cwd=project_copy).stdout
    assert _ran(exp) == {"train", "evaluate", "promote"}, exp
    metrics = json.loads((project_copy / "artifacts/evaluate/metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and metrics["split_id"] == split["split_id"]
    for name in ("model.keras", "history.csv", "weights.json", "classes.json", "augment_preview.png"):
        assert (project_copy / "artifacts/train" / name).is_file(), name
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], cwd=project_copy).stdout)
    assert "accuracy" in json.dumps(shown)
    assert json.loads(run(["dvc", "exp", "show", "--json"], cwd=project_copy).stdout)

    again = run(["dvc", "repro"], cwd=project_copy).stdout
    assert _ran(again) == set() and "Data and pipelines are up to date" in again
    assert json.loads(run(["dvc", "status", "--json"], cwd=project_copy).stdout) == {}
    _the_prefect_flow_in_process_reruns_nothing(project_copy)

    # An evaluate-only param reruns evaluate, and promote reports the decision made for that run already.
    only_eval = run(["dvc", "exp", "run", "-S", "evaluate.top_k=3"], cwd=project_copy).stdout
    assert _ran(only_eval) == {"evaluate", "promote"} and "(decided earlier)" in only_eval
    assert "top_3_accuracy" in (project_copy / "artifacts/evaluate/metrics.json").read_text()

    _a_second_run_is_decided_by_the_rule(project_copy)
    _data_with_other_classes_ends_green_and_uncompared(project_copy)

    plots = run(["dvc", "plots", "show", "-o", "plots_out"], cwd=project_copy).stdout
    assert (project_copy / "plots_out" / "index.html").is_file(), plots

    _the_local_mlflow_store_holds_the_run(project_copy, visionops_ui)


def _the_prefect_flow_in_process_reruns_nothing(project: Path) -> None:
    """The flow without a server, after an unchanged `dvc repro`: every stage up to date, dvc.lock untouched."""
    import sys

    before = {name: (project / name).read_bytes() for name in ("dvc.lock", "params.yaml")}
    out = run(
        [sys.executable, "flows/training_pipeline.py"],
        cwd=project,
        PREFECT_HOME=str(project.parent / "ph"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ran"] == dict.fromkeys(("validate", "split", "train", "evaluate", "promote"), False), out
    assert before == {name: (project / name).read_bytes() for name in before}


def _decision(project: Path) -> dict:
    return json.loads((project / "artifacts/promote/decision.json").read_text())


def _a_second_run_is_decided_by_the_rule(project: Path) -> None:
    """A second run with other params (untrained: almost surely worse) gets the next version, is compared with the
    first and decided by the rule. (Racing promotions and `previous_champion`: tests/e2e/test_registry.py.)"""
    from mlflow import MlflowClient

    first = _decision(project)
    assert (first["version"], first["decision"]) == ("1", "promoted")
    # Untrained: the backbone stays random and the head barely moves. Run in a throwaway copy (`--temp`, as queued
    # experiments are): its run and version must still land in this checkout's store, not in the copy's.
    untrained = ["-S", "train.finetune.epochs=0", "-S", "train.head.learning_rate=0.000001"]
    run(["dvc", "exp", "run", "--temp", *untrained], cwd=project)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    name = first["registered_model"]
    second = client.get_model_version(name, "2").tags
    score = next(float(v) for k, v in second.items() if k.startswith("score.") and k.endswith(".roc_auc_ovr"))
    assert float(second["decision.champion_score"]) == first["score"] and second["decision.compared_with"] == "1"
    champion = "2" if score >= first["score"] else "1"  # (min_delta 0: an equal score is promoted)
    assert second["decision"] == ("promoted" if champion == "2" else "kept"), second
    assert str(client.get_model_version_by_alias(name, "champion").version) == champion
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    runs = {client.get_model_version(name, v).run_id for v in ("1", "2")}
    assert len(runs) == 2, "one MLflow run per training"
    _the_weights_provenance_reaches_the_run_the_version_and_its_card(client, name)


def _the_weights_provenance_reaches_the_run_the_version_and_its_card(client, name: str) -> None:
    """The committed params start from the packaged ImageNet weights; where they came from is on record."""
    from visionops.training.weights import PACKAGED

    package = PACKAGED["EfficientNetLite2"]
    version = client.get_model_version(name, "1")
    assert version.tags["weights.used"] == "imagenet" and version.tags["weights.sha256"] == package.sha256
    assert version.tags["weights.source"] == f"package {package.package} 0.1.0"
    assert f"from package {package.package} 0.1.0, file sha256 `{package.sha256}`" in version.description
    logged = client.get_run(version.run_id).data.tags
    assert logged["weights.package_version"] == "0.1.0" and logged["weights.licence"].startswith("Apache-2.0")
    assert logged["mlflow.note.content"].startswith(f"Fine-tuned from imagenet weights (package {package.package}")


def _data_with_other_classes_ends_green_and_uncompared(project: Path) -> None:
    """The issue's first run on a user's own data (other classes, params unchanged): every stage runs, promote
    keeps the model as challenger without comparing it, and `dvc repro` ends green (it crashed re-scoring)."""
    import shutil

    classes = sorted(p.name for p in (project / "data").iterdir() if p.is_dir())
    shutil.rmtree(project / "data" / classes[-1])  # the new dataset: one class fewer
    run(["dvc", "add", "-q", "data"], cwd=project)
    head_only = ["-S", "train.finetune.epochs=0"]  # (what is checked happens around training: no stage 2 needed)
    done = run(["dvc", "exp", "run", *TINY, *RULE, *head_only], cwd=project)
    assert _ran(done.stdout) == {"validate", "split", "train", "evaluate", "promote"} and "Traceback" not in done.stderr
    decision = _decision(project)
    assert (decision["version"], decision["decision"]) == ("3", "incomparable"), decision
    assert decision["champion_score"] is None and not list((project / "artifacts/promote").glob("champion_v*"))
    ours, theirs = ", ".join(classes[:-1]), ", ".join(classes)
    assert f"classes differ: this model has [{ours}] (3), champion v" in decision["reason"]
    assert f"has [{theirs}] (4)" in decision["reason"] and "promote.registered_model=" in decision["reason"]


def _the_local_mlflow_store_holds_the_run(project: Path, visionops_ui) -> None:
    """Without MLFLOW_TRACKING_URI the runs go to the project's sqlite store, and `visionops ui` serves them."""
    import urllib.request

    assert (project / "mlflow.db").is_file() and (project / "mlartifacts").is_dir()
    run_id = json.loads((project / "artifacts/train/run.json").read_text())["run_id"]
    url = f"{visionops_ui(project).url}/api/2.0/mlflow/runs/get?run_id={run_id}"
    with urllib.request.urlopen(url, timeout=30) as response:
        logged = json.loads(response.read())["run"]
    assert logged["info"]["status"] == "FINISHED"
    assert {m["key"] for m in logged["data"]["metrics"]} >= {"loss", "val_accuracy", "test_accuracy"}


def test_invalid_params_fail_the_stage_with_the_key(project_copy: Path) -> None:
    run(cli("pull-data"), cwd=project_copy)
    params = project_copy / "params.yaml"
    params.write_text(params.read_text().replace("min_side:", "min_sidee:"))
    proc = run(["dvc", "repro"], cwd=project_copy, check=False)
    assert proc.returncode != 0
    assert "validate.min_sidee: unknown key. Did you mean 'min_side'?" in proc.stderr + proc.stdout
