"""The README's journeys as a new user walks them: a fresh clone, a plain shell, the README's own commands.

One user walks both journeys on one clone (the ``tiny_user`` fixture of tests/servers.py: this checkout with a tiny
generated sample in its in-repo DVC remote, a home of its own, a plain shell, free ports through the variables the
README documents; nothing is injected), in this file's order: the Prefect journey first (its first run must find a
clone where nothing ran yet), then the sweep (which counts only what it added), then `./run.sh down` and a second
`./run.sh setup`. Results are checked through the servers' REST APIs and the clone's git refs.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from browser import needs_chromium, page_text
from helpers import get_json, processes, readme_commands, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PREFECT, SWEEP = "<!-- journey: prefect", "<!-- journey: sweep"
# The sweep's learning rates as a user edits them: one invalid (-1), so two of the four trials fail.
README_RATES, TEST_RATES = "train.finetune.learning_rate=0.0005,0.001", "train.finetune.learning_rate=0.001,-1"
VERSIONS = "model-versions/search?filter=" + urllib.parse.quote("name='visionops-sample-classifier'")


class Poller(threading.Thread):
    """GETs a URL every second and records every answer that is not 200 (the UI must stay up throughout)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.failures, self.polls, self.done = url, [], 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    status = response.status
            except OSError as err:
                status = getattr(err, "code", None) or repr(err)
            self.polls += 1
            if status != 200:
                self.failures.append((time.strftime("%H:%M:%S"), status))


def _stack_processes(clone: Path) -> list[str]:
    """Live processes whose command line names the clone (its venv's servers and workers, supervisord)."""
    return [f"{pid}: {cmd[:160]}" for pid, fields, cmd in processes() if str(clone) in cmd and fields[0] != "Z"]


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _exp_refs(clone: Path) -> set[str]:
    return set(run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=clone).stdout.split())


GIT_SOURCE = {
    "commit": ["rev-parse", "HEAD"],
    "branch": ["branch", "--show-current"],
    "repoURL": ["remote", "get-url", "origin"],
}


def test_prefect_journey_lands_in_the_checkout_and_a_rerun_trains_nothing(tiny_user) -> None:
    user = tiny_user
    commands = readme_commands(PREFECT)
    assert commands[0] == "./run.sh up" and sum("deployment run" in c for c in commands) == 2, commands
    user.shell(commands[0])
    poller = Poller(user.url("prefect") + "/")
    poller.start()
    for line in commands[1:]:
        user.shell(line)
    poller.done.set()
    poller.join()
    assert poller.polls > 10 and poller.failures == [], f"the Prefect UI did not answer 200: {poller.failures}"

    # Prefect: both flow runs of the deployment Completed; the second restored every stage.
    api = user.url("prefect") + "/api"
    runs = get_json(f"{api}/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC"})
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], [(r["name"], r["state_type"]) for r in runs]
    summaries = []
    for flow_run in runs:
        artifacts = get_json(f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}})
        summaries.append(next(a["data"] for a in artifacts if a["key"] == "training-pipeline"))
    assert "| ran | ran | ran | ran | ran | ran |" in summaries[0], summaries[0]
    # (its clone had no outputs: DVC restored each stage's from its run cache instead of running the command)
    assert "| ran | restored | restored | restored | restored | restored |" in summaries[1], summaries[1]

    # MLflow: the run and the model version are in the store the stack's UI serves, which is the clone's mlflow.db.
    mlflow = user.url("mlflow") + "/api/2.0/mlflow"
    experiment = get_json(f"{mlflow}/experiments/get-by-name?experiment_name=visionops-sample")["experiment"]
    found = get_json(f"{mlflow}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(found) == 1 and found[0]["info"]["status"] == "FINISHED", found
    run_id = found[0]["info"]["run_id"]
    source = {t["key"]: t["value"] for t in found[0]["data"]["tags"] if t["key"].startswith("mlflow.source.")}
    git = {k: run(["git", *a], cwd=user.clone).stdout.strip() for k, a in GIT_SOURCE.items()}
    # MLflow's "Source" column: a job (the deployment), its stage, and the code it ran: the deployment clones the
    # user's checkout (README), so its repository is that checkout, at the checkout's commit and branch.
    expected = {"mlflow.source.name": "dvc.yaml:train", "mlflow.source.type": "JOB"}
    expected |= {f"mlflow.source.git.{k}": v for k, v in git.items()} | {"mlflow.source.git.repoURL": str(user.clone)}
    assert source == expected and len(git["commit"]) == 40, source
    assert experiment["artifact_location"].startswith((user.clone / "mlartifacts").as_uri()), experiment
    for summary in summaries:  # both summaries link to that run, on the stack's MLflow UI
        assert f"{user.url('mlflow')}/#/experiments/{experiment['experiment_id']}/runs/{run_id}" in summary
    versions = get_json(f"{mlflow}/{VERSIONS}")
    assert [v["run_id"] for v in versions["model_versions"]] == [run_id]
    tags = {t["key"]: t["value"] for t in versions["model_versions"][0]["tags"]}
    assert tags["decision"] in ("promoted", "rejected"), tags
    assert (user.clone / "mlflow.db").stat().st_size > 0

    # DVC: outputs and run cache were pushed to the default remote under the user's home, not into the clone.
    store = user.home / ".local/share/visionops/dvc-remote"
    assert any((store / "runs").rglob("*")), "the run cache reached the default remote"
    assert run(["git", "status", "--porcelain"], cwd=user.clone).stdout == "", "nothing new in the working tree"
    assert _exp_refs(user.clone), "the overridden run reached the checkout as a DVC experiment"


# What only MLflow's GenAI view shows in its menu: a printed URL must open the model-training view instead.
GENAI_VIEW = ("Training runs", "Evaluation runs", "Detect Issues")


@needs_chromium
def test_each_printed_url_opens_its_page_in_a_fresh_browser(tiny_user, tmp_path: Path) -> None:
    """Where the README sends a user after the Prefect journey: the URLs `./run.sh status` prints and the links of the
    deployment's summary, each opened in headless Chromium with a fresh profile (a first visit), show the runs table
    with the run, the run's metrics and artifacts, and the registered model with its aliases, in the model-training
    view."""
    user = tiny_user
    printed = re.findall(r"http://127\.0\.0\.1:\d+\S*", user.shell("./run.sh status").stdout)
    mlflow_ui = next(u for u in printed if u.startswith(user.url("mlflow")))
    prefect_ui = next(u for u in printed if u.startswith(user.url("prefect")))
    api = user.url("mlflow") + "/api/2.0/mlflow"
    experiment = get_json(f"{api}/experiments/get-by-name?experiment_name=visionops-sample")["experiment"]
    run_info = get_json(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"][0]["info"]
    model = get_json(f"{api}/registered-models/get?name=visionops-sample-classifier")["registered_model"]
    aliases = [a["alias"] for a in model["aliases"] if a["version"] == "1"]
    flow_run = get_json(f"{user.url('prefect')}/api/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC"})[0]
    found = {"flow_run_id": {"any_": [flow_run["id"]]}}
    summary = next(a for a in get_json(f"{user.url('prefect')}/api/artifacts/filter", {"artifacts": found}))["data"]
    linked = dict(re.findall(r"\[([^\]]+)\]\((http[^)]+)\)", summary))
    profiles = iter(range(100))

    def visit(url: str, *expected: str) -> str:
        text = page_text(url, tmp_path / f"profile-{next(profiles)}")
        assert all(e in text for e in expected), f"{url} shows no {expected}: {text[:3000]}"
        return text

    assert "training-pipeline" in visit(prefect_ui + "/runs", "Runs")
    pages = {
        "runs table": visit(mlflow_ui, run_info["run_name"], "Runs", "Models"),
        "run": visit(linked[run_info["run_name"]], run_info["run_id"], "test_accuracy", "Parameters"),
        "artifacts": visit(linked["artifacts"], "evaluation", "train", "Artifacts"),
        "version": visit(linked["visionops-sample-classifier v1"], "Version 1", *(f"@ {a}" for a in aliases)),
        "model": visit(linked["visionops-sample-classifier"], "Version 1", *(f"@ {a}" for a in aliases)),
    }
    assert aliases and "challenger" in aliases, aliases
    genai = {page: [g for g in GENAI_VIEW if g in text] for page, text in pages.items()}
    assert not any(genai.values()), f"pages open in MLflow's GenAI view: {genai}"


def test_sweep_runs_trials_two_at_a_time_reports_failures_and_promotes_once(tiny_user) -> None:
    """The README's sweep lines, with the learning rates a user would edit, one of them invalid (``-1``): two of the
    four trials fail while the others finish."""
    user = tiny_user
    up, deploy, sweep_line = readme_commands(SWEEP)
    assert up == "./run.sh up --workers 2" and deploy == "./run.sh deploy", (up, deploy)
    assert sweep_line.startswith("./run.sh sweep ") and README_RATES in sweep_line and "--concurrency 2" in sweep_line
    user.shell("./run.sh down", timeout=180)  # `up` leaves a running stack as it is: the journey's has one worker
    user.shell(up)
    api, mlflow = user.url("prefect") + "/api", user.url("mlflow") + "/api/2.0/mlflow"
    # What the Prefect journey left (flow runs, model versions, experiments) is not the sweep's.
    runs_before = {r["id"] for r in get_json(f"{api}/flow_runs/filter", {})}
    versions_before = {v["version"] for v in get_json(f"{mlflow}/{VERSIONS}").get("model_versions", [])}
    refs_before = _exp_refs(user.clone)
    user.shell(deploy)
    out = user.shell(sweep_line.replace(README_RATES, TEST_RATES)).stdout
    result = json.loads(out.strip().splitlines()[-1])
    sweep_id, best = result["sweep"], result["best"]

    # Prefect: the sweep completed; its four trials ran as training flow runs, two at a time, two failed.
    runs = get_json(f"{api}/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC"})
    runs = [r for r in runs if r["id"] not in runs_before]
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
    experiment = get_json(f"{mlflow}/experiments/get-by-name?experiment_name=visionops-sample")["experiment"]
    found = get_json(f"{mlflow}/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 50})
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found["runs"]}
    parents = [i for i, t in tags.items() if t.get("visionops.sweep.role") == "parent"]
    assert len(parents) == 1 and tags[parents[0]]["visionops.sweep"] == sweep_id, tags
    assert tags[parents[0]]["mlflow.source.name"].startswith("sweep.py") and tags[parents[0]]["mlflow.user"]
    children = {t["visionops.sweep.trial"]: i for i, t in tags.items() if t.get("mlflow.parentRunId") == parents[0]}
    assert sorted(children) == ["1", "2"], tags
    for trial, run_id in children.items():
        assert tags[run_id]["visionops.dvc_experiment"] == f"{sweep_id}-t{trial}"
        assert tags[run_id]["mlflow.source.type"] == "JOB", "each trial is a deployment run on a worker"
        logged = get_json(f"{mlflow}/runs/get?run_id={run_id}")["run"]
        params = {p["key"]: p["value"] for p in logged["data"]["params"]}
        assert params["train.finetune.learning_rate"] == "0.001", params
        assert params["train.dropout"] == ("0.2" if trial == "1" else "0.4"), params
        history = get_json(f"{mlflow}/metrics/get-history?run_id={run_id}&metric_key=loss")["metrics"]
        assert [m["step"] for m in history] == [0, 1], "an epoch of each stage, each once"
    parent_files = get_json(f"{mlflow}/artifacts/list?run_id={parents[0]}&path=sweep")["files"]
    assert {"sweep/sweep.md", "sweep/trials.json"} <= {f["path"] for f in parent_files}, parent_files

    # Registry: the sweep added exactly one version, the best trial's, with its decision (against the journey's
    # champion, when it ran first); `champion` is on it exactly when it was promoted.
    versions = [v for v in get_json(f"{mlflow}/{VERSIONS}")["model_versions"] if v["version"] not in versions_before]
    assert [v["run_id"] for v in versions] == [best["run_id"]] and best["run_id"] in children.values(), versions
    decision = {t["key"]: t["value"] for t in versions[0]["tags"]}["decision"]
    decisions = ("promoted", "kept", "rejected", "indistinguishable")
    assert decision == best["decision"] and decision in decisions, versions[0]["tags"]
    # (model-versions/search never fills `aliases`; model-versions/get does)
    name = urllib.parse.quote(versions[0]["name"])
    added = get_json(f"{mlflow}/model-versions/get?name={name}&version={versions[0]['version']}")["model_version"]
    assert ("champion" in added.get("aliases", [])) == (decision == "promoted"), added

    # DVC: the completed trials are experiments of the clone, named after the sweep.
    refs = _exp_refs(user.clone) - refs_before
    assert sorted(ref.rsplit("/", 1)[-1] for ref in refs) == [f"{sweep_id}-t1", f"{sweep_id}-t2"], refs
    shown = user.shell(".venv/bin/dvc exp show --json").stdout
    assert f"{sweep_id}-t1" in shown and f"{sweep_id}-t2" in shown


def test_down_stops_every_process_of_the_stack(tiny_user) -> None:
    user = tiny_user
    assert _stack_processes(user.clone), "the journey's stack runs"
    user.shell("./run.sh down", timeout=180)
    assert _stack_processes(user.clone) == []
    assert "not running" in user.shell("./run.sh status || true").stdout


def test_setup_twice_leaves_the_environment_untouched(tiny_user) -> None:
    user = tiny_user
    cfg = user.clone / ".venv" / "pyvenv.cfg"
    before = (cfg.stat().st_ino, sorted(p.name for p in (user.clone / ".venv/lib").glob("python3*/site-packages/*")))
    started = time.monotonic()
    user.shell("./run.sh setup")
    took = time.monotonic() - started
    after = (cfg.stat().st_ino, sorted(p.name for p in (user.clone / ".venv/lib").glob("python3*/site-packages/*")))
    assert after == before, "a second setup rebuilt or changed .venv"
    print(f"second ./run.sh setup: {took:.2f} s")
