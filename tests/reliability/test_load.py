"""Load on the team tracking server: 16 processes log training-sized runs at once, then 8 of them promote at once.

The server is the team setup (`mlflow server` on PostgreSQL, artifacts proxied to S3: the ``team_mlflow`` fixture).
Each client is a process of its own running the project's code (tests/reliability/load_client.py): the run is
logged as `visionops train` and `visionops evaluate` log it (live per-epoch metrics, then
:func:`visionops.tracking.log_training` and :func:`~visionops.tracking.log_evaluation`), and promoted as
`visionops promote` does (:func:`visionops.stages.promote.promote`, under the registry lock). What is checked is that
nothing is lost, doubled or left behind, and that the registry ends where the promotion rule says; the clients'
wall and request times are printed (run with ``-s``), never asserted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from helpers import REPO, tiny_project, tool_env
from mlflow import MlflowClient

from visionops.config import PromoteParams
from visionops.contracts.model import ModelInfo
from visionops.contracts.results import TestMetrics, write_resolved
from visionops.params import load_params
from visionops.stages.promote import decide
from visionops.tracking.record import LOGGED_EVALUATION, LOGGED_TRAINING

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.faults]

CLIENT = REPO / "tests" / "reliability" / "load_client.py"
RUNS, PROMOTERS, EPOCHS, LIVE_EPOCHS = 16, 8, 50, 30
NAME = "load-classifier"
PARAMS = f"""
train: {{model: EfficientNetB0, image_size: 32, weights: null, batch_size: 8, head: {{epochs: 5}},
       finetune: {{epochs: 45}}}}
augment: []
tracking: {{experiment: load}}
promote: {{registered_model: {NAME}, metric: accuracy, min_delta: 0.01, min_metric: 0.5,
          confidence: null, max_class_drop: null}}
"""
# The promoters' test accuracies, in the order they are started: two below the floor (rejected), the rest 0.03 apart
# (more than min_delta), so every order of decisions must end with 0.80 as champion; the others log only. (They are
# one model's predictions with scores written over them, so the margin alone decides: no evidence to weigh.)
PROMOTED_SCORES = (0.62, 0.71, 0.45, 0.80, 0.68, 0.77, 0.40, 0.74)
OTHER_SCORES = (0.55, 0.58, 0.61, 0.64, 0.67, 0.70, 0.73, 0.76)
HISTORY = ("loss", "accuracy", "val_loss", "val_accuracy", "stage")


def _template(root: Path) -> Path:
    """A project whose validate and split really ran (3 classes × 8 images), with a train stage's and an evaluate
    stage's files: a tiny real Keras model (pooling + softmax; the servers are under test here, not TensorFlow), its
    classes.json, weights.json and params.json, a curves PNG, and evaluation reports. Clients write history.csv and
    metrics.json themselves."""
    import keras

    from visionops.contracts.model import WeightsUsed
    from visionops.training.plots import plot_history

    project = tiny_project(root, PARAMS)
    train, evaluate = project / "artifacts/train", project / "artifacts/evaluate"
    train.mkdir(parents=True)
    evaluate.mkdir(parents=True)
    model = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")]
    )
    model.save(train / "model.keras")
    ModelInfo(classes=["ant", "bee", "cow"], task="classification", image_size=32, resize_side=36, model="tiny").write(
        train
    )
    WeightsUsed(None, "random").write(train)
    params = load_params(project / "params.yaml")
    write_resolved(train, {"train": params.train, "augment": params.augment})
    curve = pd.DataFrame({"epoch": range(EPOCHS), "stage": 1, "loss": 1.0, "accuracy": 0.5})
    png = plot_history(curve)
    for folder, name in ((train, "curves.png"), (train, "augment_preview.png"), (evaluate, "confusion_matrix.png")):
        (folder / name).write_bytes(png)
    TestMetrics(0.0, 0.5, {}, None, 0.1, examples=6, split_id="").write(evaluate)  # (each client sets its own)
    (evaluate / "per_class.csv").write_text(
        "class,precision,recall,f1,support\nant,1,1,1,2\nbee,1,1,1,2\ncow,1,1,1,2\n"
    )
    (evaluate / "predictions.csv").write_text("path,label,predicted,confidence\nant/a.jpg,ant,ant,0.9\n")
    return project


def _clients(mode: str, projects: list[Path], extra: dict[Path, list[str]], uri: str) -> tuple[float, list[dict]]:
    """Start one client per project at once; wait for all. Returns the wall time and what each wrote."""
    env = tool_env(MLFLOW_TRACKING_URI=uri)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, str(CLIENT), mode, str(p), *extra.get(p, [])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in projects
    ]
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    wall = time.perf_counter() - start
    for project, proc, output in zip(projects, procs, outputs, strict=True):
        assert proc.returncode == 0, f"{mode} client {project.name} exited {proc.returncode}:\n{output[-5000:]}"
    results = [json.loads((p / f"load-{mode}.json").read_text()) for p in projects]
    # Clients reach the tracking server only: no artifact bypasses it (presigned S3 URLs name the server's S3 host).
    hosts = {r["host"] for result in results for r in result["requests"]}
    assert hosts == {uri.split("://", 1)[1]}, hosts
    return wall, results


def _figures(wall: float, results: list[dict]) -> dict:
    """Wall times and request latencies (p50/p95, in ms) overall and by kind of request."""

    def kind(r: dict) -> str:
        path = r["path"]
        if "/mlflow-artifacts/" in path:
            return f"artifact {r['method']}"
        path = re.sub(r"m-[0-9a-f]{32}", "m-<id>", path)
        return path.rsplit("/mlflow/", 1)[-1] if "/api/" in path else path

    requests = [r for result in results for r in result["requests"]]

    def stats(values: list[float]) -> dict:
        ms = sorted(v * 1000 for v in values)
        return {
            "n": len(ms),
            "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
            "max_ms": round(ms[-1], 1),
        }

    walls = stats([r["wall_s"] for r in results])
    kinds: dict[str, list[float]] = {}
    for r in requests:
        kinds.setdefault(kind(r), []).append(r["s"])
    return {
        "clients": len(results),
        "wall_s": round(wall, 1),
        "client_wall_s": {k.replace("_ms", "_s"): round(v / 1000, 1) if k != "n" else v for k, v in walls.items()},
        "requests": stats([r["s"] for r in requests]),
        "errors": sum(1 for r in requests if not r["status"] or r["status"] >= 500),
        "status_4xx": sum(1 for r in requests if r["status"] and 400 <= r["status"] < 500),
        "by_kind": {k: stats(v) for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1]))},
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_artifacts(project: Path) -> dict[str, Path]:
    """Each artifact a client's run must hold (path in the run → the local file it was logged from)."""
    art = project / "artifacts"
    files = {
        "config/params.yaml": project / "params.yaml",
        "split/split.json": art / "split/split.json",
        "validation/summary.json": art / "validate/summary.json",
    }
    files |= {f"train/{p.name}": p for p in (art / "train").iterdir() if p.suffix in (".png", ".csv", ".json")}
    files.pop("train/run.json")
    files |= {f"evaluation/{n}": art / "evaluate" / n for n in ("metrics.json", "per_class.csv", "predictions.csv")}
    files["evaluation/confusion_matrix.png"] = art / "evaluate/confusion_matrix.png"
    docs = art / "validate/data_docs"
    files |= {f"validation/data_docs/{p.relative_to(docs).as_posix()}": p for p in docs.rglob("*") if p.is_file()}
    return files


def _check_run(client: MlflowClient, project: Path, result: dict, download: Path) -> int:
    """The run is FINISHED, holds every epoch's metrics exactly once, every file byte for byte, and its model."""
    run_id = result["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", (project.name, run.info.status)
    assert {LOGGED_TRAINING, LOGGED_EVALUATION} <= set(run.data.tags), run.data.tags
    assert run.data.params["train.finetune.epochs"] == "45" and run.data.params["promote.registered_model"] == NAME

    local = pd.read_csv(project / "artifacts/train/history.csv")
    points = 0
    for key in HISTORY:
        logged = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in logged] == list(range(EPOCHS)), (
            f"{project.name} {key}: steps {[m.step for m in logged]}"
        )
        assert [m.value for m in logged] == pytest.approx(local[key].tolist()), (project.name, key)
        points += len(logged)
    test_accuracy = client.get_metric_history(run_id, "test_accuracy")
    assert [m.value for m in test_accuracy] == [pytest.approx(result["score"])], test_accuracy

    expected = _expected_artifacts(project)
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(download / run_id)))
    got = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    assert set(got) == set(expected), (project.name, set(got) ^ set(expected))
    for rel, path in expected.items():
        assert _sha256(got[rel]) == _sha256(path), f"{project.name}: {rel} differs from what was logged"
    model = Path(mlflow.artifacts.download_artifacts(result["model_uri"], dst_path=str(download / f"{run_id}-model")))
    keras_files = list(model.rglob("model.keras"))
    assert [_sha256(p) for p in keras_files] == [_sha256(project / "artifacts/train/model.keras")], keras_files
    assert mlflow.models.Model.load(model / "MLmodel").metadata["classes"] == ["ant", "bee", "cow"]
    return points + len(test_accuracy)


def _rule_outcomes(scores: list[float], rule: PromoteParams) -> set[float | None]:
    """The champion's score after deciding ``scores`` one by one with :func:`decide`, over every order."""
    outcomes = set()
    for order in itertools.permutations(scores):
        champion = None
        for score in order:
            if decide(score, champion, rule, pretrained=False).action == "promoted":
                champion = score
        outcomes.add(champion)
    return outcomes


def test_16_clients_log_at_once_then_8_promote_at_once(team_mlflow, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # (one bar per download: 32 of them)
    template = _template(tmp_path / "template")
    projects = [shutil.copytree(template, tmp_path / f"client-{i:02d}") for i in range(RUNS)]
    # The promoters and the others interleave; every other client's live logging stops after LIVE_EPOCHS epochs
    # (as when live logging fails), leaving the rest to log_training at the end.
    scores = dict(zip(projects[0::2] + projects[1::2], PROMOTED_SCORES + OTHER_SCORES, strict=True))
    args = {p: [str(EPOCHS), str(EPOCHS if i % 4 < 2 else LIVE_EPOCHS), str(scores[p])] for i, p in enumerate(projects)}
    log_wall, logged = _clients("log", projects, args, team_mlflow.uri)

    client = MlflowClient(team_mlflow.uri)
    mlflow.set_tracking_uri(team_mlflow.uri)
    points = sum(_check_run(client, p, r, tmp_path / "download") for p, r in zip(projects, logged, strict=True))
    assert points == RUNS * (EPOCHS * len(HISTORY) + 1)
    assert len({r["run_id"] for r in logged}) == RUNS

    promoters = projects[0::2]
    promote_wall, promoted = _clients("promote", promoters, {}, team_mlflow.uri)

    # No lock left behind, and nothing else registered beside the model and its versions.
    assert [m.name for m in client.search_registered_models()] == [NAME], "the promotion lock was released"
    versions = {v.version: v for v in client.search_model_versions(f"name = '{NAME}'")}
    assert sorted(versions, key=int) == [str(n) for n in range(1, PROMOTERS + 1)]
    assert sorted(r["version"] for r in promoted) == sorted(versions), "each promoter registered its own version"
    run_of = {r["run_id"]: p for p, r in zip(projects, logged, strict=True)}
    score = {n: scores[run_of[v.run_id]] for n, v in versions.items()}
    rule = PromoteParams(
        registered_model=NAME, metric="accuracy", min_delta=0.01, min_metric=0.5, confidence=None, max_class_drop=None
    )
    for n, v in versions.items():
        tags = v.tags
        assert {"decision", "decision.reason", "decision.at", "decision.metric"} <= set(tags), (n, tags)
        assert float(tags["metric.accuracy"]) == pytest.approx(score[n])
        # Each decision is the rule applied to the candidate and the champion it was compared with.
        before = tags.get("decision.compared_with")
        expected = decide(score[n], score[before] if before else None, rule, pretrained=False).action
        assert tags["decision"] == expected, (n, score[n], before, tags)
    # Decided with no champion yet: the first to pass the floors (promoted) and any rejected before it.
    firsts = [v.tags["decision"] for v in versions.values() if "decision.compared_with" not in v.tags]
    assert firsts.count("promoted") == 1 and set(firsts) <= {"promoted", "rejected"}, firsts

    champion = client.get_model_version_by_alias(NAME, "champion")
    outcomes = _rule_outcomes(list(score.values()), rule)
    assert outcomes == {max(PROMOTED_SCORES)}, outcomes
    assert score[champion.version] == max(PROMOTED_SCORES)
    # The chain `visionops rollback` walks: each previous champion scored less than the one that replaced it.
    chain, current = [], champion.version
    while current:
        chain.append(score[current])
        current = versions[current].tags.get("previous_champion")
    assert chain == sorted(chain, reverse=True) and len(set(chain)) == len(chain), chain

    figures = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "runs": RUNS,
        "metric_points": points,
        "log": _figures(log_wall, logged),
        "promote": _figures(promote_wall, promoted),
        "decisions": {n: (score[n], versions[n].tags["decision"]) for n in sorted(versions, key=int)},
        "champion": champion.version,
    }
    (tmp_path / "load-figures.json").write_text(json.dumps(figures, indent=1))
    print("\nload figures:", json.dumps(figures, indent=1))
