"""The Model Registry against a real `mlflow server`: racing promotions, re-scoring, rollback, models:/ URIs, serving.

Scores of tiny models are noise, so the tests compare them by ECE (continuous, never tied) with min_delta 0 and
assert what the rule must give for the measured scores, whichever model happens to be better.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from helpers import MlflowServer, cli, free_port, run, tiny_project, tool_env
from mlflow import MlflowClient

from visionops.config import PromoteParams, SplitParams
from visionops.promote import decide
from visionops.split import split
from visionops.tracking import score_tag

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TRAIN = """
train: {{image_size: 32, weights: null, batch_size: 8, workers: 1, seed: {seed}, head: {{epochs: 1}},
        finetune: {{epochs: {epochs}}}}}
augment: []
tracking: {{experiment: registry-test}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One real tracking server for the module (each test uses its own registered model)."""
    started = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield started
    started.stop()


def _trained(root: Path, uri: str, epochs: int, seed: int) -> Path:
    tiny_project(root, TRAIN.format(seed=seed, epochs=epochs))
    run(cli("train"), cwd=root, MLFLOW_TRACKING_URI=uri)
    run(cli("evaluate"), cwd=root, MLFLOW_TRACKING_URI=uri)
    return root


@pytest.fixture(scope="module")
def candidates(server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two trained and evaluated projects on the same split, ordered by their test ECE: 'better' and 'worse'."""
    base = tmp_path_factory.mktemp("candidates")
    a = _trained(base / "a", server.uri, epochs=0, seed=1)
    b = _trained(base / "b", server.uri, epochs=2, seed=2)
    ece = {p: _metrics(p)["ece"] for p in (a, b)}
    assert ece[a] != ece[b]
    better, worse = sorted((a, b), key=ece.get)
    return {"better": better, "worse": worse}


def _metrics(project: Path) -> dict:
    return json.loads((project / "artifacts/evaluate/metrics.json").read_text())


def _use_registry(project: Path, name: str) -> None:
    """Point the project's promote section at registered model ``name`` (promote params do not touch training)."""
    text = (project / "params.yaml").read_text().split("\npromote:")[0]
    section = f"promote: {{registered_model: {name}, metric: ece, min_delta: 0.0}}"
    (project / "params.yaml").write_text(f"{text}\n{section}\n")


def _promote(project: Path, uri: str) -> dict:
    run(cli("promote"), cwd=project, MLFLOW_TRACKING_URI=uri)
    return json.loads((project / "artifacts/promote/decision.json").read_text())


def _run_id(project: Path) -> str:
    return json.loads((project / "artifacts/train/run.json").read_text())["run_id"]


def test_racing_promotions_end_with_the_better_model_as_champion(server, candidates) -> None:
    better, worse = candidates["better"], candidates["worse"]
    for project in (better, worse):
        _use_registry(project, "race")
    env = tool_env(MLFLOW_TRACKING_URI=server.uri)
    procs = [subprocess.Popen(cli("promote"), cwd=p, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for p in (worse, better)]  # fmt: skip
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
    client = MlflowClient(server.uri)
    assert len(client.search_model_versions("name = 'race'")) == 2
    assert client.search_registered_models("name = 'race.lock'") == [], "the promotion lock was released"
    champion = client.get_model_version_by_alias("race", "champion")
    assert champion.run_id == _run_id(better)

    # The history is one of the two sequential orders, whichever process got the lock first.
    d_better = json.loads((better / "artifacts/promote/decision.json").read_text())
    d_worse = json.loads((worse / "artifacts/promote/decision.json").read_text())
    if d_worse["champion_before"] is None:  # worse decided first, then lost the champion alias to better
        assert d_worse["decision"] == "promoted" and d_better["decision"] == "promoted"
        assert d_better["champion_before"] == d_worse["version"]
        assert client.get_model_version_by_alias("race", "previous_champion").version == d_worse["version"]
        last = d_better
    else:  # better decided first; worse was compared with it and kept out
        assert d_better["decision"] == "promoted" and d_better["champion_before"] is None
        assert d_worse["decision"] == "kept" and d_worse["champion_before"] == d_better["version"]
        last = d_worse
    assert client.get_model_version_by_alias("race", "challenger").version == last["version"]


def test_promote_rerun_registry_and_rollback(server, candidates) -> None:
    better, worse = candidates["better"], candidates["worse"]
    for project in (better, worse):
        _use_registry(project, "seq")
    first = _promote(worse, server.uri)
    assert (first["version"], first["decision"]) == ("1", "promoted") and "first model" in first["reason"]
    second = _promote(better, server.uri)
    assert (second["version"], second["decision"], second["champion_before"]) == ("2", "promoted", "1")
    assert second["champion_rescored"] is False, "same split: the champion's own test score is used"
    again = _promote(better, server.uri)
    assert again["already_decided"] and again["version"] == "2", "promote is idempotent per run"

    listing = json.loads(run(cli("registry", "--json"), cwd=better, MLFLOW_TRACKING_URI=server.uri).stdout)
    assert [(r["version"], r["aliases"], r["decision"]) for r in listing] == [
        ("2", "challenger,champion", "promoted"), ("1", "previous_champion", "promoted")]  # fmt: skip
    assert "seq (ece on its own test split)" in run(cli("registry"), cwd=better, MLFLOW_TRACKING_URI=server.uri).stdout

    client = MlflowClient(server.uri)
    back = run(cli("rollback", "--reason", "bad in production"), cwd=better, MLFLOW_TRACKING_URI=server.uri)
    assert "champion is v1 again" in back.stdout
    assert client.get_model_version_by_alias("seq", "champion").version == "1"
    demoted = client.get_model_version("seq", "2")
    assert demoted.tags["rolled_back"] == "true" and demoted.tags["rolled_back.reason"] == "bad in production"
    nothing = run(cli("rollback"), cwd=better, MLFLOW_TRACKING_URI=server.uri, check=False)
    assert nothing.returncode == 1 and "nothing to roll back to" in nothing.stderr


def test_a_champion_from_another_split_is_rescored_first(server, candidates, tmp_path: Path) -> None:
    worse = candidates["worse"]
    _use_registry(worse, "rescore")
    assert _promote(worse, server.uri)["decision"] == "promoted"  # v1, scored on split 1
    # The candidate: the other trained model, evaluated on a split made with another seed.
    third = tmp_path / "c"
    shutil.copytree(candidates["better"], third)
    split(third / "artifacts/validate/manifest.csv", SplitParams(test_ratio=0.25, seed=2), third / "artifacts/split")
    run(cli("evaluate"), cwd=third, MLFLOW_TRACKING_URI=server.uri)
    split_id = _metrics(third)["split_id"]
    assert split_id != _metrics(worse)["split_id"]
    _use_registry(third, "rescore")
    decision = _promote(third, server.uri)
    assert decision["champion_before"] == "1" and decision["champion_rescored"] is True
    client = MlflowClient(server.uri)
    rescored = float(client.get_model_version("rescore", "1").tags[score_tag(split_id, "ece")])
    assert decision["champion_score"] == pytest.approx(rescored)
    assert (third / "artifacts/promote/champion_v1/metrics.json").is_file()
    # The same number, measured independently: evaluate the registered champion (a models:/ URI) on that split.
    run(cli("evaluate", "--model", "models:/rescore/1", "--out", "check"), cwd=third,
        MLFLOW_TRACKING_URI=server.uri)  # fmt: skip
    assert json.loads((third / "check/metrics.json").read_text())["ece"] == pytest.approx(rescored)
    rule = PromoteParams(registered_model="rescore", metric="ece", min_delta=0.0)
    assert decision["decision"] == decide(_metrics(third)["ece"], rescored, rule, pretrained=False).action
    assert client.get_model_version_by_alias("rescore", "challenger").version == "2"
    again = _promote(third, server.uri)
    assert again["already_decided"] and again["decision"] == decision["decision"]


def test_predict_and_serve_the_champion_by_alias(server, candidates, tmp_path: Path) -> None:
    project = candidates["worse"]
    _use_registry(project, "serve")
    assert _promote(project, server.uri)["decision"] == "promoted"

    out = tmp_path / "predictions.csv"
    run(cli("predict", "data/bee", "--model", "models:/serve@champion", "--out", str(out)), cwd=project,
        MLFLOW_TRACKING_URI=server.uri)  # fmt: skip
    table = pd.read_csv(out)
    assert len(table) == 8 and set(table["label_1"]) <= {"ant", "bee", "cow"}

    port = free_port()
    serve = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", "models:/serve@champion", "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(port)], env=tool_env(MLFLOW_TRACKING_URI=server.uri), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert serve.poll() is None, serve.stdout.read().decode()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        body = json.dumps({"inputs": [[[[128.0] * 3] * 32] * 32]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
        assert len(predictions) == 1 and len(predictions[0]) == 3 and sum(predictions[0]) == pytest.approx(1, abs=1e-3)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)
