"""Security: paths stay inside the project, models carrying code are refused, secrets never reach MLflow,
servers bind 127.0.0.1, and the team tracking server's basic auth really refuses strangers.

Everything runs against real components on 127.0.0.1: a real `mlflow server`, the real `visionops` CLI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from corpus import good_jpeg, write
from helpers import cli, run, venv_tool

from visionops.config import ConfigError
from visionops.contracts.data import SplitInfo
from visionops.contracts.model import ModelInfo
from visionops.contracts.results import TestMetrics
from visionops.files import PathEscapeError, inside
from visionops.params import parse_params

CANARIES = {  # where credentials enter: the environment, and nowhere else
    "AWS_ACCESS_KEY_ID": "CANARYAKIA0000000001",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-3f9d1c",
    "MLFLOW_TRACKING_PASSWORD": "canary-mlflow-password-71ac",
    "MLFLOW_TRACKING_TOKEN": "canary-mlflow-token-5d0f",
    "PREFECT_API_KEY": "canary-prefect-key-a4e9",
    "GITHUB_TOKEN": "canary-github-token-c2b7",
    "HF_TOKEN": "canary-hf-token-9e13",
}


def test_inside_refuses_every_way_out(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write(root, "cat/a.jpg", b"x")
    write(tmp_path, "outside/b.jpg", b"y")
    os.symlink(tmp_path / "outside", root / "cat" / "link")
    assert inside(root, "cat/a.jpg", "k") == (root / "cat/a.jpg").resolve()
    for path in ("../outside/b.jpg", "cat/../../outside/b.jpg", str(tmp_path / "outside/b.jpg"), "cat/link/b.jpg"):
        with pytest.raises(PathEscapeError) as info:
            inside(root, path, "manifest.csv row 7 (path)")
        assert str(info.value).startswith(f"manifest.csv row 7 (path): '{path}' leads outside")
        assert "copy the file into" in str(info.value)


def test_weights_outside_only_by_absolute_path(tmp_path: Path) -> None:
    """A downloaded weights file elsewhere is legitimate when named explicitly; `..` traversal is not."""
    absolute = str(tmp_path / "downloads" / "b0_notop.h5")
    assert parse_params({"train": {"weights": absolute}}).train.weights == absolute
    assert parse_params({"train": {"weights": "models/b0.h5"}}).train.weights == "models/b0.h5"
    with pytest.raises(ConfigError, match=r"train\.weights: '\.\./downloads/b0\.h5' climbs out of the project"):
        parse_params({"train": {"weights": "../downloads/b0.h5"}})


@pytest.mark.slow  # real servers or processes killed mid-write: tens of seconds
def test_model_with_code_is_refused_by_loader_and_cli(tmp_path: Path) -> None:
    import keras

    from visionops.training.model import UnsafeModelError, load_model

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)  # a Lambda layer: pickled Python code in the file
    path = tmp_path / "model" / "model.keras"
    path.parent.mkdir()
    keras.Model(inputs, outputs).save(path)
    (path.parent / "classes.json").write_text(
        json.dumps({"classes": ["a"], "task": "classification", "image_size": 8, "resize_side": 8})
    )
    with pytest.raises(UnsafeModelError, match="refused to load, it carries Python code"):
        load_model(path)
    write(tmp_path, "images/a.jpg", good_jpeg(1))
    proc = run(cli("predict", "images", "--model", str(path), "--out", "predicted"), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{path}: refused to load, it carries Python code" in proc.stderr
    assert not (tmp_path / "predicted" / "predictions.csv").exists()


def _logged_stage_outputs(root: Path) -> Path:
    """The files log_training reads, written as the train/split/validate stages write them, for a tiny model."""
    import cv2

    artifacts = root / "artifacts"
    write(root, "params.yaml", b"train: {image_size: 32, weights: null}\n")
    frame = pd.DataFrame({"path": ["cat/a.jpg", "dog/b.jpg"], "label": ["cat", "dog"], "sha256": ["a" * 64, "b" * 64]})
    for side in ("train", "val", "test"):
        write(artifacts, f"split/{side}.csv", frame.to_csv(index=False).encode())
    sides = ("train", "val", "test")
    lists = {f"{s}.csv": hashlib.sha256((artifacts / "split" / f"{s}.csv").read_bytes()).hexdigest() for s in sides}
    counts = {side: {"cat": 1, "dog": 1} for side in ("train", "val", "test")}
    SplitInfo(["cat", "dog"], counts, {side: 2 for side in counts}, lists, "c" * 64).write(artifacts / "split")
    write(artifacts, "validate/summary.json", b"{}")
    history = pd.DataFrame({"epoch": [0, 1], "stage": [1, 2], "loss": [1.0, 0.5]})
    write(artifacts, "train/history.csv", history.to_csv(index=False).encode())
    write(artifacts, "train/weights.json", json.dumps({"used": "random", "requested": None}).encode())
    ModelInfo(["cat", "dog"], "classification", 32, 36, "EfficientNetB0").write(artifacts / "train")
    write(artifacts, "train/params.json", b"{}")
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    for name in ("augment_preview.png", "curves.png"):
        write(artifacts, f"train/{name}", png)
    (artifacts / "evaluate").mkdir(parents=True, exist_ok=True)
    TestMetrics(0.5, 0.4, {2: 1.0}, 0.6, 0.1, examples=4, split_id="c" * 64).write(artifacts / "evaluate")
    for name in ("per_class.csv", "predictions.csv"):
        write(artifacts, f"evaluate/{name}", b"label,value\ncat,1\n")
    write(artifacts, "evaluate/confusion_matrix.png", png)
    return artifacts


def _status(
    url: str, user: str | None = None, password: str | None = None, body: dict | None = None, header: str = ""
) -> int:
    """The HTTP status of a GET (a POST of ``body`` as JSON) with basic auth ``user:password`` or a raw
    Authorization ``header``."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if user:
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if header:
        request.add_header("Authorization", header)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow  # real servers or processes killed mid-write: tens of seconds
def test_basic_auth_refuses_strangers(auth_mlflow_server) -> None:
    url = auth_mlflow_server.uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(url) == 401
    assert _status(url, "admin", "wrong") == 401
    assert _status(url, "admin", auth_mlflow_server.admin_password) == 200


@pytest.mark.slow  # a real Prefect server, and the prefect CLI twice
def test_prefect_basic_auth_refuses_strangers(auth_prefect_server) -> None:
    """The team's Prefect server (compose.yaml: PREFECT_SERVER_API_AUTH_STRING) answers only clients that send the
    same user:password (PREFECT_API_AUTH_STRING); its health probe stays open for the container's healthcheck."""
    api, (user, password) = auth_prefect_server.api, auth_prefect_server.auth_string.split(":", 1)
    assert _status(f"{api}/health") == 200, "the unauthenticated health probe (compose's healthcheck)"
    for path, body in (("admin/version", None), ("flow_runs/filter", {"limit": 1}), ("work_pools/filter", {})):
        url = f"{api}/{path}"
        assert _status(url, body=body) == 401, f"{path}: no credentials"
        assert _status(url, user, "wrong-password", body=body) == 401, f"{path}: wrong password"
        assert _status(url, "someone", password, body=body) == 401, f"{path}: wrong user"
        assert _status(url, body=body, header="Bearer " + password) == 401, f"{path}: not basic auth"
        assert _status(url, user, password, body=body) == 200, f"{path}: the right credentials"
    # The real client (CLI, workers, flow runs) with and without PREFECT_API_AUTH_STRING.
    prefect = [venv_tool("prefect"), "work-pool", "create", "auth-pool", "--type", "process"]
    env = auth_prefect_server.env
    refused = subprocess.run(prefect, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    let_in = {**env, "PREFECT_API_AUTH_STRING": auth_prefect_server.auth_string}
    created = subprocess.run(prefect, env=let_in, capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stdout + created.stderr
    assert _status(f"{api}/work_pools/auth-pool", user, password) == 200


@pytest.mark.slow  # real servers or processes killed mid-write: tens of seconds
def test_no_secret_reaches_mlflow(tmp_path: Path, mlflow_server, monkeypatch) -> None:
    """Canary credentials in the environment of a real logging run appear in no param, tag, metric or file."""
    import keras
    from mlflow import MlflowClient

    from visionops.params import load_params
    from visionops.tracking import connection, record, runs

    for key, value in CANARIES.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")  # with the password: the client sends basic auth
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    root = tmp_path / "project"
    artifacts = _logged_stage_outputs(root)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(
        inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    )
    client = connection.connect(root)
    run_id = runs.start_run(client, "canary", "canary-run", tags={"stage": "train"}, resume_file=root / "run_id").run_id
    model.save(artifacts / "train" / "model.keras")
    record.log_training(
        client,
        run_id,
        load_params(root / "params.yaml"),
        root=root,
        train_dir=artifacts / "train",
        split_dir=artifacts / "split",
    )
    record.log_evaluation(client, run_id, artifacts / "evaluate")

    logged = MlflowClient(mlflow_server.uri).get_run(run_id).data
    texts = [*logged.params, *logged.params.values(), *logged.tags, *logged.tags.values(), *logged.metrics]
    assert len(logged.params) > 20 and "version.keras" in logged.tags, "the run must really have been logged"
    stored = [p for p in mlflow_server.root.rglob("*") if p.is_file() and p.name != "server.log"]
    assert any(p.suffix == ".keras" for p in stored) and any(p.name == "mlflow.db" for p in stored)
    for secret in CANARIES.values():
        assert not [t for t in texts if secret in t], secret
        assert not [p for p in stored if secret.encode() in p.read_bytes()], secret


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} shows them) of sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


@pytest.mark.slow  # real servers or processes killed mid-write: tens of seconds
def test_visionops_ui_listens_on_loopback_only(tmp_path: Path, visionops_ui) -> None:
    port = visionops_ui(tmp_path).port
    addresses = _listening(port)
    assert addresses and set(addresses) == {"0100007F"}, addresses  # 127.0.0.1, little-endian hex


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://alice:s3cret@mlflow.example:5000/path", "https://mlflow.example:5000/path"),
        ("http://token@127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////project/mlflow.db", "sqlite:////project/mlflow.db"),
    ],
)
def test_credentials_in_a_tracking_uri_are_never_shown(uri: str, shown: str) -> None:
    """run.json, `visionops train` output and error messages print the URI through shown_uri."""
    from visionops.tracking.connection import shown_uri

    assert shown_uri(uri) == shown
