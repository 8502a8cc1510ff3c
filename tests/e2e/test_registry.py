"""The Model Registry against a real `mlflow server`: racing promotions, re-scoring, rollback, models:/ URIs, unlike
models never compared, model cards, exports, and `mlflow models serve` answering images with class names.

Scores of tiny models are noise, so the tests compare them by ECE (continuous, never tied) with min_delta 0 and
assert what the rule must give for the measured scores, whichever model happens to be better.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from corpus import exif_rotated_jpeg, write
from helpers import cli, run, tiny_project, tool_env
from mlflow import MlflowClient

from visionops.config import PromoteParams, SplitParams
from visionops.contracts.results import TestMetrics
from visionops.stages.promote import decide
from visionops.stages.split import split
from visionops.tracking.registry import score_tag

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TRAIN = """
train: {{image_size: 32, weights: null, batch_size: 8, model: EfficientNetB0, seed: {seed}, head: {{epochs: 1}},
        finetune: {{epochs: {epochs}, unfreeze_blocks: 1}}, task: {task}}}
augment: []
tracking: {{experiment: registry-test}}
"""


def _trained(root: Path, uri: str, epochs: int, seed: int, task: str = "classification") -> Path:
    """Train and evaluate a tiny project through the CLI; their --json results are what the stages wrote."""
    tiny_project(root, TRAIN.format(seed=seed, epochs=epochs, task=task))
    trained = json.loads(run(cli("train", "--json"), cwd=root, MLFLOW_TRACKING_URI=uri).stdout)
    assert trained["run"] == json.loads((root / "artifacts/train/run.json").read_text())
    assert trained["info"] == json.loads((root / "artifacts/train/classes.json").read_text())
    assert trained["model_path"] == "artifacts/train/model.keras" and trained["warnings"] == []
    assert [row["epoch"] for row in trained["history"]] == list(range(1 + epochs))
    evaluated = json.loads(run(cli("evaluate", "--json"), cwd=root, MLFLOW_TRACKING_URI=uri).stdout)
    assert evaluated["metrics"] == _metrics(root), "the metrics printed are metrics.json's"
    assert evaluated["run_id"] == _run_id(root), "the evaluation was logged into the training run"
    return root


@pytest.fixture(scope="module")
def candidates(mlflow_module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two trained and evaluated projects on the same split, ordered by their test ECE: 'better' and 'worse'."""
    base = tmp_path_factory.mktemp("candidates")
    a = _trained(base / "a", mlflow_module.uri, epochs=0, seed=1)
    b = _trained(base / "b", mlflow_module.uri, epochs=2, seed=2)
    ece = {p: _metrics(p)["ece"] for p in (a, b)}
    assert ece[a] != ece[b]
    better, worse = sorted((a, b), key=ece.get)
    return {"better": better, "worse": worse}


@pytest.fixture(scope="module")
def rotation(mlflow_module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's rotation model: trained on the same images and split as the candidates, task orientation."""
    return _trained(tmp_path_factory.mktemp("rotation") / "r", mlflow_module.uri, epochs=0, seed=3, task="orientation")


def _metrics(project: Path) -> dict:
    return json.loads((project / "artifacts/evaluate/metrics.json").read_text())


def _use_registry(project: Path, name: str) -> None:
    """Point the project's promote section at registered model ``name`` (promote params do not touch training)."""
    text = (project / "params.yaml").read_text().split("\npromote:")[0]
    # (the gate's evidence is tested with models that differ for sure, tests/e2e/test_promotion_gate.py: these ones
    # differ by chance, so the tests of racing, re-scoring and rollback let the margin alone decide)
    section = (
        f"promote: {{registered_model: {name}, metric: ece, min_delta: 0.0, confidence: null, max_class_drop: null}}"
    )
    (project / "params.yaml").write_text(f"{text}\n{section}\n")


def _promote(project: Path, uri: str, *args: str) -> dict:
    """`visionops promote --json`: the decision it prints is the one it wrote (decision.json)."""
    done = run(cli("promote", "--json", *args), cwd=project, MLFLOW_TRACKING_URI=uri)
    assert "Traceback" not in done.stderr, done.stderr
    decision = json.loads(done.stdout)
    assert decision == json.loads((project / "artifacts/promote/decision.json").read_text())
    return decision


def _run_id(project: Path) -> str:
    return json.loads((project / "artifacts/train/run.json").read_text())["run_id"]


def test_racing_promotions_end_with_the_better_model_as_champion(mlflow_module, candidates) -> None:
    better, worse = candidates["better"], candidates["worse"]
    for project in (better, worse):
        _use_registry(project, "race")
    env = tool_env(MLFLOW_TRACKING_URI=mlflow_module.uri)
    procs = [
        subprocess.Popen(cli("promote"), cwd=p, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for p in (worse, better)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
    client = MlflowClient(mlflow_module.uri)
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


def test_promote_rerun_registry_and_rollback(mlflow_module, candidates) -> None:
    better, worse = candidates["better"], candidates["worse"]
    for project in (better, worse):
        _use_registry(project, "seq")
    first = _promote(worse, mlflow_module.uri)
    assert (first["version"], first["decision"]) == ("1", "promoted") and "first model" in first["reason"]
    second = _promote(better, mlflow_module.uri)
    assert (second["version"], second["decision"], second["champion_before"]) == ("2", "promoted", "1")
    assert second["champion_rescored"] is False, "same split: the champion's own test score is used"
    again = _promote(better, mlflow_module.uri)
    assert again["already_decided"] and again["version"] == "2", "promote is idempotent per run"

    listing = json.loads(run(cli("registry", "--json"), cwd=better, MLFLOW_TRACKING_URI=mlflow_module.uri).stdout)
    assert [(r["version"], r["aliases"], r["decision"]) for r in listing] == [
        ("2", "challenger,champion", "promoted"),
        ("1", "previous_champion", "promoted"),
    ]
    assert (
        "seq (ece on its own test split)"
        in run(cli("registry"), cwd=better, MLFLOW_TRACKING_URI=mlflow_module.uri).stdout
    )

    client = MlflowClient(mlflow_module.uri)
    back = run(cli("rollback", "--reason", "bad in production"), cwd=better, MLFLOW_TRACKING_URI=mlflow_module.uri)
    assert "champion is v1 again" in back.stdout
    assert client.get_model_version_by_alias("seq", "champion").version == "1"
    demoted = client.get_model_version("seq", "2")
    assert demoted.tags["rolled_back"] == "true" and demoted.tags["rolled_back.reason"] == "bad in production"
    nothing = run(cli("rollback"), cwd=better, MLFLOW_TRACKING_URI=mlflow_module.uri, check=False)
    assert nothing.returncode == 1 and "nothing to roll back to" in nothing.stderr


def test_a_champion_from_another_split_is_rescored_first(mlflow_module, candidates, tmp_path: Path) -> None:
    worse = candidates["worse"]
    _use_registry(worse, "rescore")
    assert _promote(worse, mlflow_module.uri)["decision"] == "promoted"  # v1, scored on split 1
    # The candidate: the other trained model, evaluated on a split made with another seed.
    third = tmp_path / "c"
    shutil.copytree(candidates["better"], third)
    split(third / "artifacts/validate/manifest.csv", SplitParams(test_ratio=0.25, seed=2), third / "artifacts/split")
    run(cli("evaluate"), cwd=third, MLFLOW_TRACKING_URI=mlflow_module.uri)
    split_id = TestMetrics.read(third / "artifacts/evaluate").split_id
    assert split_id != TestMetrics.read(worse / "artifacts/evaluate").split_id
    _use_registry(third, "rescore")
    decision = _promote(third, mlflow_module.uri)
    assert decision["champion_before"] == "1" and decision["champion_rescored"] is True
    client = MlflowClient(mlflow_module.uri)
    rescored = float(client.get_model_version("rescore", "1").tags[score_tag(split_id, "ece")])
    assert decision["champion_score"] == pytest.approx(rescored)
    assert (third / "artifacts/promote/champion_v1/metrics.json").is_file()
    # The same number, measured independently: evaluate the registered champion (a models:/ URI) on that split.
    run(
        cli("evaluate", "--model", "models:/rescore/1", "--out", "check"),
        cwd=third,
        MLFLOW_TRACKING_URI=mlflow_module.uri,
    )
    assert json.loads((third / "check/metrics.json").read_text())["ece"] == pytest.approx(rescored)
    rule = PromoteParams(registered_model="rescore", metric="ece", min_delta=0.0, confidence=None)
    assert decision["decision"] == decide(_metrics(third)["ece"], rescored, rule, pretrained=False).action
    assert client.get_model_version_by_alias("rescore", "challenger").version == "2"
    again = _promote(third, mlflow_module.uri)
    assert again["already_decided"] and again["decision"] == decision["decision"]


def _invoke(base: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        f"{base}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]


def test_predict_and_serve_the_champion_by_alias(mlflow_module, candidates, serve_model, tmp_path: Path) -> None:
    """A real `mlflow models serve` answers two JPEG files (one EXIF-rotated) with the class names and
    probabilities `visionops predict` gives for the same files; tensors still work."""
    project = candidates["worse"]
    _use_registry(project, "serve")
    assert _promote(project, mlflow_module.uri)["decision"] == "promoted"

    photos = tmp_path / "photos"
    upright = write(photos, "a_upright.jpg", next((project / "data/bee").glob("*.jpg")).read_bytes())
    rotated = write(photos, "b_exif_rotated.jpg", exif_rotated_jpeg(64, 40))
    out = tmp_path / "predicted"
    run(
        cli("predict", str(photos), "--model", "models:/serve@champion", "--out", str(out), "--top-k", "3"),
        cwd=project,
        MLFLOW_TRACKING_URI=mlflow_module.uri,
    )
    table = pd.read_csv(out / "predictions.csv")
    assert table["path"].tolist() == [str(upright), str(rotated)] and set(table["label_1"]) <= {"ant", "bee", "cow"}

    base = serve_model("models:/serve@champion", mlflow_module.uri).url
    images = [base64.b64encode(p.read_bytes()).decode() for p in (upright, rotated)]
    answers = _invoke(
        base, {"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}, "params": {"top_k": 3}}
    )
    for answer, (_, row) in zip(answers, table.iterrows(), strict=True):
        assert [answer[f"label_{k}"] for k in (1, 2, 3)] == [row[f"label_{k}"] for k in (1, 2, 3)]
        assert [answer[f"p_{k}"] for k in (1, 2, 3)] == pytest.approx([row[f"p_{k}"] for k in (1, 2, 3)], abs=1e-5)
    tensors = _invoke(base, {"inputs": [[[[128.0] * 3] * 32] * 32]})  # clients that resize themselves
    assert len(tensors) == 1 and tensors[0]["label_1"] in {"ant", "bee", "cow"}
    assert sum(tensors[0][f"p_{k}"] for k in (1, 2, 3)) == pytest.approx(1, abs=1e-3)


def _one_line(project: Path, uri: str, *args: str) -> str:
    """What `visionops promote` prints: exit 0 and one line (the decision and its reason)."""
    done = run(cli("promote", *args), cwd=project, MLFLOW_TRACKING_URI=uri)
    assert "Traceback" not in done.stderr, done.stderr
    return " ".join(done.stdout.split())  # (rich wraps long lines at the terminal width)


def test_a_model_of_another_task_is_never_compared_with_the_champion(
    mlflow_module, candidates, rotation, tmp_path
) -> None:
    """The issue's silent failure: a 4-class rotation model must not take `champion` from a shape classifier."""
    shapes = candidates["worse"]
    for project in (shapes, rotation):
        _use_registry(project, "shapes")
    assert _promote(shapes, mlflow_module.uri)["decision"] == "promoted"  # v1: the shape classifier
    line = _one_line(rotation, mlflow_module.uri)
    decision = json.loads((rotation / "artifacts/promote/decision.json").read_text())
    assert (decision["version"], decision["decision"], decision["champion_before"]) == ("2", "incomparable", "1")
    assert decision["champion_score"] is None, "nothing was scored"
    assert (
        "not compared with champion v1: task differs: this model answers 'orientation', champion v1 answers "
        "'classification'; classes differ: this model has [0, 90, 180, 270] (4), champion v1 has [ant, bee, cow] "
        "(3)"
    ) in decision["reason"]
    assert "promote.registered_model=shapes-orientation" in decision["reason"] and "--replace-champion" in line
    assert line.startswith("promote: shapes v2 incomparable: not compared with champion v1: task differs")
    assert "this model has [0, 90, 180, 270] (4), champion v1 has [ant, bee, cow] (3)" in line, "printed as it is"
    client = MlflowClient(mlflow_module.uri)
    assert client.get_model_version_by_alias("shapes", "champion").version == "1"
    assert client.get_model_version_by_alias("shapes", "challenger").version == "2"
    assert not list((rotation / "artifacts/promote").glob("champion_v*")), "the champion was not re-scored"

    # A person decides: the rotation model replaces the champion uncompared, and the why is kept.
    replaced = _promote(rotation, mlflow_module.uri, "--replace-champion", "the app now asks for rotations")
    assert (replaced["decision"], replaced["already_decided"]) == ("promoted", False)
    assert replaced["replace_reason"] == "the app now asks for rotations"
    assert client.get_model_version_by_alias("shapes", "champion").version == "2"
    assert client.get_model_version_by_alias("shapes", "previous_champion").version == "1"
    v2 = client.get_model_version("shapes", "2")
    assert v2.tags["decision.replace_reason"] == "the app now asks for rotations"

    # Each version's model card: its description, a file beside decision.json and in the model's own files.
    card = (rotation / "artifacts/promote/model_card.md").read_text()
    assert v2.description == card and card.startswith("# shapes v2\n") and "orientation model" in card
    assert "models:/shapes/2" in card and client.get_model_version("shapes", "1").description.startswith("# shapes v1")
    mlflow.set_tracking_uri(mlflow_module.uri)
    files = mlflow.artifacts.download_artifacts("models:/shapes/2/model_card.md", dst_path=str(tmp_path))
    assert Path(files).read_text() == card

    # evaluate --model with a registered model on data of other classes: a clear error, no traceback.
    other = tiny_project(tmp_path / "other", "{}\n", classes=("ant", "bee", "dog"))
    done = run(
        cli("evaluate", "--model", "models:/shapes/1", "--out", "ev"),
        cwd=other,
        check=False,
        MLFLOW_TRACKING_URI=mlflow_module.uri,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    message = " ".join(done.stderr.split())
    assert re.search(
        r"error: model models:/shapes/1 was trained on classes \[ant, bee, cow\], but the test split "
        r"artifacts/split/test.csv is labelled \[[a-z, ]*dog\]: \[dog\] are unknown to it",
        message,
    ), message


def test_a_champion_with_another_class_order_is_not_compared(
    mlflow_module, candidates, tmp_path: Path, monkeypatch
) -> None:
    """visionops sorts class names, so another order comes from a model logged elsewhere or by another version:
    made here by logging a trained model with its class list reordered, as such a model would be logged."""
    from visionops.params import load_params
    from visionops.tracking import connection, record, runs

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(candidates["better"], elsewhere)
    info_path = elsewhere / "artifacts/train/classes.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "classes": info["classes"][::-1]}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_module.uri)
    client = connection.connect(elsewhere)
    logged = runs.start_run(client, "registry-test", "reordered", tags={}, resume_file=elsewhere / "run_id")
    params, artifacts = load_params(elsewhere / "params.yaml"), elsewhere / "artifacts"
    record.log_training(
        client, logged.run_id, params, root=elsewhere, train_dir=artifacts / "train", split_dir=artifacts / "split"
    )
    logged.write(elsewhere / "artifacts/train")
    for project in (elsewhere, candidates["worse"]):
        _use_registry(project, "order")
    assert _promote(elsewhere, mlflow_module.uri)["decision"] == "promoted"
    decision = _promote(candidates["worse"], mlflow_module.uri)
    assert decision["decision"] == "incomparable"
    assert (
        "class order differs: this model has [ant, bee, cow], champion v1 has [cow, bee, ant] (the same output "
        "index means another class)"
    ) in decision["reason"]


def test_a_champion_whose_model_files_are_gone(mlflow_module, candidates) -> None:
    better, worse = candidates["better"], candidates["worse"]
    for project in (better, worse):
        _use_registry(project, "gone")
    assert _promote(worse, mlflow_module.uri)["decision"] == "promoted"
    client = MlflowClient(mlflow_module.uri)
    model_id = client.get_model_version("gone", "1").source.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    shutil.rmtree(location.removeprefix("file://"))  # lost from the artifact store (the server's own folder)
    line = _one_line(better, mlflow_module.uri)
    decision = json.loads((better / "artifacts/promote/decision.json").read_text())
    assert (
        decision["decision"] == "incomparable" and client.get_model_version_by_alias("gone", "champion").version == "1"
    )
    assert "not compared with champion v1: champion v1 cannot be read (the files of models:/" in decision["reason"]
    assert "so it can neither be scored nor served" in line
    replaced = _promote(better, mlflow_module.uri, "--replace-champion", "v1's files were lost")
    assert replaced["decision"] == "promoted" and client.get_model_version_by_alias("gone", "champion").version == "2"


def test_replace_champion_on_a_first_decision(mlflow_module, candidates, rotation) -> None:
    """--replace-champion on a version promote has not decided yet: taken at once, the why kept."""
    _use_registry(candidates["better"], "first")  # (not "worse": the test above deleted its model's files)
    _use_registry(rotation, "first")
    assert _promote(candidates["better"], mlflow_module.uri)["decision"] == "promoted"
    replaced = _promote(rotation, mlflow_module.uri, "--replace-champion", "rotations from now on")
    assert (replaced["version"], replaced["decision"], replaced["already_decided"]) == ("2", "promoted", False)
    assert (
        "replaces champion v1 uncompared (--replace-champion: rotations from now on); task differs"
        in (replaced["reason"])
    )
    again = _promote(rotation, mlflow_module.uri, "--replace-champion", "once more")
    assert again["already_decided"] and again["replace_reason"] == "rotations from now on", "the champion stays as is"


def test_export_savedmodel_tflite_onnx_match_keras(mlflow_module, candidates, tmp_path: Path) -> None:
    """`visionops export`: SavedModel, TFLite (float32, int8) and ONNX files logged to the run, each run here afresh
    (TensorFlow, the TFLite interpreter, onnxruntime) and compared with the Keras model on the test images, within
    the tolerances export.py states."""
    import onnxruntime
    import tensorflow as tf

    from visionops.data.preprocess import model_input
    from visionops.stages.export import TOLERANCES
    from visionops.training.model import load_trained

    project = candidates["worse"]
    done = run(cli("export"), cwd=project, MLFLOW_TRACKING_URI=mlflow_module.uri)
    assert "Traceback" not in done.stderr
    report = json.loads((project / "artifacts/export/export.json").read_text())
    assert all(f["within_tolerance"] for f in report["formats"].values()), report
    logged = {f.path for f in MlflowClient(mlflow_module.uri).list_artifacts(_run_id(project), "export")}
    assert logged >= {
        "export/model.onnx",
        "export/saved_model",
        "export/model_float32.tflite",
        "export/model_int8.tflite",
        "export/labels.txt",
        "export/export.json",
    }
    mlflow.set_tracking_uri(mlflow_module.uri)
    local = Path(
        mlflow.artifacts.download_artifacts(run_id=_run_id(project), artifact_path="export", dst_path=str(tmp_path))
    )
    model, info = load_trained(project / "artifacts/train")
    test = pd.read_csv(project / "artifacts/split/test.csv")
    batch = np.stack(
        [model_input((project / "data" / p).read_bytes(), info.resize_side, info.image_size) for p in test["path"]]
    )
    keras_probs = model.predict(batch, verbose=0)
    loaded = tf.saved_model.load(str(local / "saved_model"))
    assert np.abs(loaded.serve(batch).numpy() - keras_probs).max() <= TOLERANCES["saved_model"]
    for name in ("float32", "int8"):
        interpreter = tf.lite.Interpreter(model_path=str(local / f"model_{name}.tflite"))
        source = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(source["index"], list(batch.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        probs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        assert np.abs(probs - keras_probs).max() <= TOLERANCES[f"tflite_{name}"], name
    session = onnxruntime.InferenceSession(str(local / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"image": batch})[0] - keras_probs).max() <= TOLERANCES["onnx"]
    assert (local / "labels.txt").read_text().split() == info.classes
