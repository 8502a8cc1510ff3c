"""The README's sweep journey in a fresh clone of a tiny project: two workers, four trials, one promotion.

The stack comes up and the deployments are registered with the README's own lines; the sweep is the README's line
with the learning rates a user would edit, one of them invalid (``-1``), so two of the four trials fail while the
others finish. Everything is checked through the Prefect and MLflow REST APIs and the clone's git refs.
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import datetime

import pytest
from helpers import get_json, readme_commands, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MARKER = "<!-- journey: sweep"
README_RATES, TEST_RATES = "train.finetune.learning_rate=0.0005,0.001", "train.finetune.learning_rate=0.001,-1"


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_sweep_runs_trials_two_at_a_time_reports_failures_and_promotes_once(tiny_user) -> None:
    user = tiny_user
    up, deploy, sweep_line = readme_commands(MARKER)
    assert up == "./run.sh up --workers 2" and deploy == "./run.sh deploy", (up, deploy)
    assert sweep_line.startswith("./run.sh sweep ") and README_RATES in sweep_line and "--concurrency 2" in sweep_line
    user.shell(up)
    user.shell(deploy)
    out = user.shell(sweep_line.replace(README_RATES, TEST_RATES)).stdout
    result = json.loads(out.strip().splitlines()[-1])
    sweep_id, best = result["sweep"], result["best"]

    # Prefect: the sweep completed; its four trials ran as training flow runs, two at a time, two failed.
    api = user.url("prefect") + "/api"
    runs = get_json(f"{api}/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC"})
    trials = [r for r in runs if r["name"].startswith(f"{sweep_id}-t")]
    sweeps = [r for r in runs if r not in trials]
    assert [r["state_type"] for r in sweeps] == ["COMPLETED"], [(r["name"], r["state_type"]) for r in runs]
    states = {r["name"]: r["state_type"] for r in trials}
    expected = {f"{sweep_id}-t{i}": s for i, s in enumerate(["COMPLETED", "COMPLETED", "FAILED", "FAILED"], 1)}
    assert states == expected, states
    spans = [(_when(r["start_time"]), _when(r["end_time"])) for r in trials]
    overlaps = [max(0, (min(a[1], b[1]) - max(a[0], b[0])).total_seconds()) for a in spans for b in spans if a < b]
    assert any(overlaps), f"two trials ran at once on the two workers: {spans}"
    events = [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans]
    at_once = max(sum(d for t, d in events if t <= moment) for moment, _ in events)
    assert at_once <= 2, "never more trials at once than --concurrency"
    artifacts = get_json(f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [sweeps[0]["id"]]}}})
    summary = next(a["data"] for a in artifacts if a["key"] == "sweep")
    assert summary.count("| FAILED |") == 2 and summary.count("| COMPLETED |") == 2, summary
    assert "learning_rate" in summary, summary

    # MLflow: one parent run, a child per completed trial with its params and per-epoch metrics.
    mlflow = user.url("mlflow") + "/api/2.0/mlflow"
    experiment = get_json(f"{mlflow}/experiments/get-by-name?experiment_name=visionops-sample")["experiment"]
    found = get_json(f"{mlflow}/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 50})
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found["runs"]}
    parents = [i for i, t in tags.items() if t.get("visionops.sweep.role") == "parent"]
    assert len(parents) == 1 and tags[parents[0]]["visionops.sweep"] == sweep_id, tags
    children = {t["visionops.sweep.trial"]: i for i, t in tags.items() if t.get("mlflow.parentRunId") == parents[0]}
    assert sorted(children) == ["1", "2"], tags
    for trial, run_id in children.items():
        assert tags[run_id]["visionops.dvc_experiment"] == f"{sweep_id}-t{trial}"
        logged = get_json(f"{mlflow}/runs/get?run_id={run_id}")["run"]
        params = {p["key"]: p["value"] for p in logged["data"]["params"]}
        assert params["train.finetune.learning_rate"] == "0.001", params
        assert params["train.dropout"] == ("0.2" if trial == "1" else "0.4"), params
        history = get_json(f"{mlflow}/metrics/get-history?run_id={run_id}&metric_key=loss")["metrics"]
        assert [m["step"] for m in history] == [0, 1], "an epoch of each stage, each once"
    parent_files = get_json(f"{mlflow}/artifacts/list?run_id={parents[0]}&path=sweep")["files"]
    assert {"sweep/sweep.md", "sweep/trials.json"} <= {f["path"] for f in parent_files}, parent_files

    # Registry: the sweep added exactly one version, the best trial's, with its decision.
    name = urllib.parse.quote("name='visionops-sample-classifier'")
    versions = get_json(f"{mlflow}/model-versions/search?filter={name}")["model_versions"]
    assert [v["run_id"] for v in versions] == [best["run_id"]] and best["run_id"] in children.values(), versions
    decision = {t["key"]: t["value"] for t in versions[0]["tags"]}["decision"]
    assert decision == best["decision"] and decision in ("promoted", "rejected"), versions[0]["tags"]

    # DVC: the completed trials are experiments of the clone, named after the sweep.
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=user.clone).stdout.split()
    assert sorted(ref.rsplit("/", 1)[-1] for ref in refs) == [f"{sweep_id}-t1", f"{sweep_id}-t2"], refs
    shown = user.shell(".venv/bin/dvc exp show --json").stdout
    assert f"{sweep_id}-t1" in shown and f"{sweep_id}-t2" in shown
