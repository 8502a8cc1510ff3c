"""The team stack, reached by configuration alone: MLflow on PostgreSQL with S3 artifacts, DVC with an S3 remote.

Every server is a real process on 127.0.0.1 (PostgreSQL, moto's S3 server, `mlflow server`), started by the
fixtures of tests/servers.py. The project's code runs unchanged; only environment variables and `dvc remote` differ
from the laptop setup. (The Prefect server on PostgreSQL is proven by tests/e2e/test_prefect.py, whose one
pipeline run uses this same stack.)
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers import cli, md5s, run, tiny_origin, tiny_project

from visionops.tracking.connection import connect
from visionops.tracking.record import MODEL_URI_TAG
from visionops.tracking.registry import CHAMPION, register_version, set_alias

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PARAMS = """
train: {image_size: 32, weights: null, batch_size: 8, model: EfficientNetB0, head: {epochs: 1}, finetune: {epochs: 0}}
augment: []
tracking: {experiment: team-stack}
"""
MODEL = "team-stack-classifier"


def _client_without_s3_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_server, tracking_uri: str) -> None:
    """The client's environment (this process and the CLI it runs): MLFLOW_TRACKING_URI, no S3 credentials at all."""
    for name in (*s3_server.env(), "MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def test_training_logs_into_postgres_and_s3_and_the_model_loads_by_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, team_mlflow, postgres_server, s3_server
) -> None:
    _client_without_s3_settings(monkeypatch, tmp_path, s3_server, team_mlflow.uri)
    database = team_mlflow.database
    project = tiny_project(tmp_path / "project", PARAMS)
    run(cli("train"), cwd=project)
    run_id = json.loads((project / "artifacts/train/run.json").read_text())["run_id"]
    client = connect()
    logged = client.get_run(run_id)

    # The rows are in PostgreSQL, where the server was told to keep them.
    params = dict(postgres_server.query(database, "SELECT key, value FROM params WHERE run_uuid = %s", (run_id,)))
    assert params["train.image_size"] == "32" and params["tracking.experiment"] == "team-stack"
    metrics = postgres_server.query(database, "SELECT DISTINCT key FROM metrics WHERE run_uuid = %s", (run_id,))
    assert {"loss", "val_loss", "stage"} <= {key for (key,) in metrics}

    # The files are in the S3 bucket, written by the server (this process has no S3 credentials).
    experiment = logged.info.experiment_id
    keys = s3_server.keys(team_mlflow.bucket, f"mlflow/{experiment}/")
    for name in ("config/params.yaml", "train/history.csv", "train/curves.png"):
        assert f"mlflow/{experiment}/{run_id}/artifacts/{name}" in keys, (name, keys)
    model_id = logged.data.tags[MODEL_URI_TAG].removeprefix("models:/")
    assert any(f"/models/{model_id}/artifacts/" in key and key.endswith(".keras") for key in keys), keys

    # Registered with the project's registry helpers, it loads back by a models:/ alias URI through the server.
    version = register_version(client, MODEL, run_id, model_uri=logged.data.tags[MODEL_URI_TAG], tags={"stack": "team"})
    set_alias(client, MODEL, CHAMPION, number=version.version)
    query = "SELECT version, run_id FROM model_versions WHERE name = %s"
    assert postgres_server.query(database, query, (MODEL,)) == [(1, run_id)]
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@{CHAMPION}")
    assert model.metadata.metadata["classes"] == ["ant", "bee", "cow"]
    answers = model.predict(np.zeros((2, 32, 32, 3), np.float32))
    assert len(answers) == 2 and set(answers["label_1"]) <= {"ant", "bee", "cow"}


def test_dvc_push_then_pull_in_a_fresh_clone_through_an_s3_remote(tmp_path: Path, s3_server) -> None:
    bucket = s3_server.bucket("team-dvc")
    origin = tiny_origin(tmp_path / "origin", f"s3://{bucket}/dvc", s3_server.endpoint, **s3_server.env())
    config = (origin / ".dvc/config").read_text()
    assert s3_server.endpoint in config and f"s3://{bucket}/dvc" in config
    secrets = [v for k, v in s3_server.env().items() if k != "AWS_DEFAULT_REGION"]
    assert not any(secret in config for secret in secrets), "credentials leaked"
    pushed = md5s(origin / "data")
    keys = set(s3_server.keys(bucket, "dvc/"))
    assert {f"dvc/files/md5/{md5[:2]}/{md5[2:]}" for md5 in pushed.values()} <= keys, "every image is in S3"

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=tmp_path)
    assert not (clone / "data").exists() and not (clone / ".dvc/cache").exists(), "a fresh clone has no data"
    run(["dvc", "pull", "-q", "data.dvc"], cwd=clone, **s3_server.env())
    assert md5s(clone / "data") == pushed
