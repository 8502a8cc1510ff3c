"""The README's journeys as a new user walks them: a fresh clone, a plain shell, the README's own commands.

Nothing is injected: no venv on PATH, no MLflow, Prefect or DVC setting. The clone gets a home folder of its own
(so the default DVC remote under ``~`` is the test's, not this machine's user's) and keeps the machine's login
environment (certificates, package mirrors) and download cache (XDG_CACHE_HOME), so installing does not download
again; the two ports are free ones, through the variables the README documents. Results are checked through the
servers' REST APIs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO, free_port, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MARKER = "<!-- journey: prefect"
PROJECT_VARIABLES = ("MLFLOW_", "PREFECT_", "DVC_", "VISIONOPS_", "VIRTUAL_ENV", "PYTHONPATH", "PYTEST_", "GIT_", "UV_")


def readme_commands(marker: str) -> list[str]:
    """The command lines of the README's code block that follows ``marker`` (comments and blank lines dropped)."""
    text = (REPO / "README.md").read_text()
    block = re.search(re.escape(marker) + r".*?\n```bash\n(.*?)\n```", text, re.S)
    assert block, f"README.md has no code block after {marker!r}"
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


class User:
    """A fresh clone of this working tree and a plain shell to type the README's commands into."""

    def __init__(self, base: Path) -> None:
        origin, self.home, self.clone = base / "origin", base / "home", base / "clone"
        listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
        for rel in filter(None, listed.split("\0")):
            if (REPO / rel).is_file():
                (origin / rel).parent.mkdir(parents=True, exist_ok=True)
                (origin / rel).write_bytes((REPO / rel).read_bytes())
                (origin / rel).chmod((REPO / rel).stat().st_mode)
        self.home.mkdir()
        (self.home / ".gitconfig").write_text("[user]\n\tname = A User\n\temail = user@localhost\n")
        # The machine's login environment (certificates, package mirrors) minus anything of the project or its tests.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(PROJECT_VARIABLES)}
        self.env.update(
            PATH=os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and "/.venv/" not in p + "/"),
            HOME=str(self.home),
            XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
            VISIONOPS_MLFLOW_PORT=str(free_port()),
            VISIONOPS_PREFECT_PORT=str(free_port()),
        )
        for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "origin"]):
            self.shell(shlex.join(cmd), cwd=origin)
        self.shell(shlex.join(["git", "clone", "-q", str(origin), str(self.clone)]), cwd=base)

    def shell(self, line: str, cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
        """Run one command line in bash as the user would type it; fail with its output if it fails."""
        done = subprocess.run(
            ["bash", "-c", line], cwd=cwd or self.clone, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"$ {line}\nexit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
        return done

    def url(self, server: str) -> str:
        return f"http://127.0.0.1:{self.env[f'VISIONOPS_{server.upper()}_PORT']}"


def _get(url: str, body: dict | None = None) -> dict | list:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


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
    """Processes whose command line names the clone (its venv's servers and workers, supervisord)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if str(clone) in text and state != "Z":
            found.append(f"{cmdline.parent.name}: {text[:160]}")
    return found


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory):
    """A new user with a fresh clone; whatever the journey started is stopped with the README's `./run.sh down`."""
    walker = User(tmp_path_factory.mktemp("journey"))
    yield walker
    walker.shell("./run.sh down", timeout=180)


def test_prefect_journey_lands_in_the_checkout_and_a_rerun_trains_nothing(user: User) -> None:
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
    runs = _get(f"{api}/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC"})
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], [(r["name"], r["state_type"]) for r in runs]
    summaries = []
    for flow_run in runs:
        artifacts = _get(f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}})
        summaries.append(next(a["data"] for a in artifacts if a["key"] == "training-pipeline"))
    assert "| ran | ran | ran | ran | ran | ran |" in summaries[0], summaries[0]
    assert "| ran | up to date | up to date | up to date | up to date | up to date |" in summaries[1], summaries[1]

    # MLflow: the run and the model version are in the store the stack's UI serves, which is the clone's mlflow.db.
    mlflow = user.url("mlflow") + "/api/2.0/mlflow"
    experiment = _get(f"{mlflow}/experiments/get-by-name?experiment_name=visionops-sample")["experiment"]
    found = _get(f"{mlflow}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(found) == 1 and found[0]["info"]["status"] == "FINISHED", found
    run_id = found[0]["info"]["run_id"]
    assert experiment["artifact_location"].startswith((user.clone / "mlartifacts").as_uri()), experiment
    for summary in summaries:  # both summaries link to that run, on the stack's MLflow UI
        assert f"{user.url('mlflow')}/#/experiments/{experiment['experiment_id']}/runs/{run_id}" in summary
    versions = _get(f"{mlflow}/model-versions/search?filter=name%3D%27visionops-sample-classifier%27")
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


def test_down_stops_every_process_of_the_stack(user: User) -> None:
    assert _stack_processes(user.clone), "the journey's stack runs"
    user.shell("./run.sh down", timeout=180)
    assert _stack_processes(user.clone) == []
    assert "not running" in user.shell("./run.sh status || true").stdout


def test_setup_twice_leaves_the_environment_untouched(user: User) -> None:
    cfg = user.clone / ".venv" / "pyvenv.cfg"
    before = (cfg.stat().st_ino, sorted(p.name for p in (user.clone / ".venv/lib").glob("python3*/site-packages/*")))
    started = time.monotonic()
    user.shell("./run.sh setup")
    took = time.monotonic() - started
    after = (cfg.stat().st_ino, sorted(p.name for p in (user.clone / ".venv/lib").glob("python3*/site-packages/*")))
    assert after == before, "a second setup rebuilt or changed .venv"
    print(f"second ./run.sh setup: {took:.2f} s")
