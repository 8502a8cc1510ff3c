"""MLflow tracking against a real `mlflow server` on 127.0.0.1: lineage-complete runs, fail-fast, outage recovery."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers import cli, run, tiny_project, tool_env
from mlflow import MlflowClient

from visionops.tracking.record import LOGGED_EVALUATION, LOGGED_TRAINING, MODEL_URI_TAG, flatten

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PARAMS = """
train: {image_size: 32, weights: null, batch_size: 8, model: EfficientNetB0, head: {epochs: 1},
       finetune: {epochs: 2, unfreeze_blocks: 1}}
augment: [{name: HorizontalFlip, p: 0.5}]
tracking: {experiment: tracking-test}
"""


@pytest.mark.faults
def test_live_metrics_then_outage_then_log_run_gives_one_complete_run(tmp_path: Path, mlflow_server) -> None:
    """Epochs reach the server live; then it dies mid-training: the stage still ends, its files intact; `log-run`
    adds what is missing later, with no duplicate point."""
    project = tiny_project(tmp_path / "project", PARAMS)
    # One retry, not MLflow's default seven with backoff (~2 min per call once the server is gone): same behaviour.
    env = tool_env(MLFLOW_TRACKING_URI=mlflow_server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1")
    proc = subprocess.Popen(
        cli("train"), cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not list(project.glob("artifacts/.resume/train-*/mlflow_run_id")) and time.monotonic() < deadline:
        time.sleep(0.2)
    # Live metrics: the first epoch's loss is on the server while the run is still running.
    client, live_id = MlflowClient(mlflow_server.uri), next(project.glob("artifacts/.resume/train-*/mlflow_run_id"))
    live_id = live_id.read_text().strip()
    while not client.get_metric_history(live_id, "loss") and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = client.get_run(live_id)
    assert seen.info.status == "RUNNING" and proc.poll() is None, "the first epoch's metrics arrived during training"
    assert [m.step for m in client.get_metric_history(live_id, "loss")] == [0]
    mlflow_server.stop()  # now the server goes away while training goes on
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "logging the training to MLflow failed" in err and "visionops log-run" in err
    assert (project / "artifacts/train/model.keras").is_file() and (project / "artifacts/train/run.json").is_file()
    evaluated = run(cli("evaluate"), cwd=project, MLFLOW_TRACKING_URI=mlflow_server.uri)
    assert "logging the evaluation to MLflow failed" in evaluated.stderr

    mlflow_server.start()  # same port, same database
    run_id = json.loads((project / "artifacts/train/run.json").read_text())["run_id"]
    recovered = run(cli("log-run"), cwd=project, MLFLOW_TRACKING_URI=mlflow_server.uri).stdout
    assert f"log-run: training and evaluation logged to run {run_id}" in " ".join(recovered.split())
    again = run(cli("log-run"), cwd=project, MLFLOW_TRACKING_URI=mlflow_server.uri).stdout
    assert f"log-run: nothing missing in run {run_id}" in " ".join(again.split())
    _assert_complete_run(MlflowClient(mlflow_server.uri), project, mlflow_server.uri)


def _assert_complete_run(client: MlflowClient, project: Path, uri: str) -> None:
    run_id = json.loads((project / "artifacts/train/run.json").read_text())["run_id"]
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name.startswith("EfficientNetB0-32px-classification")
    assert logged.data.params["train.image_size"] == "32" and logged.data.params["augment.0.name"] == "HorizontalFlip"
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2], "both fine-tuning stages on one step axis, each epoch once"
    assert [m.value for m in client.get_metric_history(run_id, "stage")] == [1, 2, 2]
    tags = logged.data.tags
    for key in ("git.commit", "git.dirty", "split_id", "weights.used", "task", "hardware.platform", "version.keras"):
        assert tags.get(key), key
    assert tags[LOGGED_TRAINING] == tags[LOGGED_EVALUATION] == "true"
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("python -m visionops.cli train", "LOCAL")
    assert tags["mlflow.note.content"].startswith("**Trained from RANDOM weights** (train.weights: null)")
    written = json.loads((project / "artifacts/evaluate/metrics.json").read_text())
    assert logged.data.metrics["test_accuracy"] == pytest.approx(written["accuracy"])
    assert logged.data.metrics["test_ece"] == pytest.approx(written["ece"])
    contexts = {i.tags[0].value for i in logged.inputs.dataset_inputs}
    assert contexts == {"train", "validation", "test"}

    files = {
        f.path
        for folder in ("config", "train", "validation", "evaluation", "split")
        for f in client.list_artifacts(run_id, folder)
    }
    for expected in (
        "config/params.yaml",
        "train/augment_preview.png",
        "train/curves.png",
        "train/history.csv",
        "validation/summary.json",
        "validation/data_docs",
        "evaluation/confusion_matrix.png",
        "evaluation/per_class.csv",
        "split/split.json",
    ):
        assert expected in files, (expected, sorted(files))
    assert client.list_artifacts(run_id, "tensorboard")

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(tags[MODEL_URI_TAG])
    assert model.metadata.metadata["classes"] == ["ant", "bee", "cow"]
    answers = model.predict(np.zeros((2, 32, 32, 3), np.float32), params={"top_k": 3})  # tensors still work
    assert list(answers.columns) == ["label_1", "p_1", "label_2", "p_2", "label_3", "p_3"] and len(answers) == 2
    assert sorted(answers.loc[0, ["label_1", "label_2", "label_3"]]) == ["ant", "bee", "cow"]
    assert answers[["p_1", "p_2", "p_3"]].sum(axis=1).to_numpy() == pytest.approx(1, abs=1e-4)


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": [{"d": "x"}]}, "e": None}) == {"a.b": "1", "a.c.0.d": "x", "e": "None"}
