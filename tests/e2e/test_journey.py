"""The README's journeys as a new user walks them: a fresh clone, a plain shell, the README's own commands.

Nothing is injected (the ``journey_user`` fixture of tests/servers.py: a fresh clone, a home of its own, a plain
shell, free ports through the variables the README documents). Results are checked through the servers' REST APIs.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import get_json, processes, readme_commands, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MARKER = "<!-- journey: prefect"


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


def test_prefect_journey_lands_in_the_checkout_and_a_rerun_trains_nothing(journey_user) -> None:
    user = journey_user
    commands = readme_commands(MARKER)
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
    assert "| ran | up to date | up to date | up to date | up to date | up to date |" in summaries[1], summaries[1]

    # MLflow: the run and the model version are in the store the stack's UI serves, which is the clone's mlflow.db.
    mlflow = user.url("mlflow") + "/api/2.0/mlflow"
    experiment = get_json(f"{mlflow}/experiments/get-by-name?experiment_name=visionops-sample")["experiment"]
    found = get_json(f"{mlflow}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(found) == 1 and found[0]["info"]["status"] == "FINISHED", found
    run_id = found[0]["info"]["run_id"]
    assert experiment["artifact_location"].startswith((user.clone / "mlartifacts").as_uri()), experiment
    for summary in summaries:  # both summaries link to that run, on the stack's MLflow UI
        assert f"{user.url('mlflow')}/#/experiments/{experiment['experiment_id']}/runs/{run_id}" in summary
    versions = get_json(f"{mlflow}/model-versions/search?filter=name%3D%27visionops-sample-classifier%27")
    assert [v["run_id"] for v in versions["model_versions"]] == [run_id]
    tags = {t["key"]: t["value"] for t in versions["model_versions"][0]["tags"]}
    assert tags["decision"] in ("promoted", "rejected"), tags
    assert (user.clone / "mlflow.db").stat().st_size > 0

    # DVC: outputs and run cache were pushed to the default remote under the user's home, not into the clone.
    store = user.home / ".local/share/visionops/dvc-remote"
    assert any((store / "runs").rglob("*")), "the run cache reached the default remote"
    assert run(["git", "status", "--porcelain"], cwd=user.clone).stdout == "", "nothing new in the working tree"
    exps = run(["git", "for-each-ref", "refs/exps"], cwd=user.clone).stdout
    assert exps.strip(), "the overridden run reached the checkout as a DVC experiment"


def test_down_stops_every_process_of_the_stack(journey_user) -> None:
    user = journey_user
    assert _stack_processes(user.clone), "the journey's stack runs"
    user.shell("./run.sh down", timeout=180)
    assert _stack_processes(user.clone) == []
    assert "not running" in user.shell("./run.sh status || true").stdout


def test_setup_twice_leaves_the_environment_untouched(journey_user) -> None:
    user = journey_user
    cfg = user.clone / ".venv" / "pyvenv.cfg"
    before = (cfg.stat().st_ino, sorted(p.name for p in (user.clone / ".venv/lib").glob("python3*/site-packages/*")))
    started = time.monotonic()
    user.shell("./run.sh setup")
    took = time.monotonic() - started
    after = (cfg.stat().st_ino, sorted(p.name for p in (user.clone / ".venv/lib").glob("python3*/site-packages/*")))
    assert after == before, "a second setup rebuilt or changed .venv"
    print(f"second ./run.sh setup: {took:.2f} s")
