"""The pipeline as Prefect deployments: a real `prefect server` and process worker on 127.0.0.1, prefect.yaml.

The origin repository is a copy of this checkout with a tiny generated dataset pushed to a DVC remote outside
it, so each flow run does what it does on a remote worker: clone, pull the data and run cache, run the stages.
Where PostgreSQL is installed, the same runs go through the team stack (Prefect and MLflow on PostgreSQL, MLflow
artifacts and the DVC remote in S3), configured by environment variables and `dvc remote` only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import REPO, MlflowServer, free_port, postgres_bin, run, tiny_origin, tool_env, wait_until_up
from mlflow import MlflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class PrefectStack:
    """A real Prefect server on a free 127.0.0.1 port (PREFECT_HOME in a temp dir) and process workers.

    The server keeps its state in sqlite under PREFECT_HOME, or in the PostgreSQL database ``database_url``
    (``postgresql+asyncpg://...``), which only the server's environment holds. ``env`` goes to the commands and
    workers (e.g. the DVC remote's credentials).
    """

    def __init__(
        self, home: Path, mlflow_uri: str, database_url: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.env = tool_env(
            PREFECT_HOME=str(home),
            PREFECT_API_URL=f"http://127.0.0.1:{self.port}/api",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            MLFLOW_TRACKING_URI=mlflow_uri,
            PREFECT_LOGGING_LEVEL="INFO",
            **(env or {}),
        )
        self.server_env = dict(self.env)
        if database_url:
            self.server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
        self.home, self.procs = home, []

    def spawn(self, cmd: list[str], log: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
        out = open(self.home / log, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        proc = subprocess.Popen(
            cmd, env=env or self.env, cwd=cwd or self.home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def start(self) -> PrefectStack:
        cmd = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        server = self.spawn(cmd, "server.log", env=self.server_env)
        url = f"http://127.0.0.1:{self.port}/api/health"
        wait_until_up(url, server, self.home / "server.log", 180, "prefect server")
        return self

    def cmd(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["prefect", *args], env=self.env, cwd=cwd or self.home, capture_output=True, text=True, timeout=300
        )
        assert not check or proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def worker(self) -> subprocess.Popen:
        return self.spawn(["prefect", "worker", "start", "--pool", "visionops-process"], "worker.log")

    @staticmethod
    def kill(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=60)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            self.kill(proc)

    def trigger(self, params: dict | None = None) -> str:
        out = self.cmd("deployment", "run", "training-pipeline/local", "--params", json.dumps(params or {})).stdout
        return next(line.split()[-1] for line in out.splitlines() if "UUID" in line)

    def state(self, flow_run_id: str) -> str:
        url = f"http://127.0.0.1:{self.port}/api/flow_runs/{flow_run_id}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())["state_type"]

    def wait(self, flow_run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(flow_run_id)
            if state in FINAL:
                return state
            time.sleep(2)
        raise TimeoutError(f"flow run {flow_run_id} still {state} after {timeout} s")

    def logs(self, flow_run_id: str) -> str:
        body = json.dumps({"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"})
        texts, offset = [], 0
        while True:
            payload = json.loads(body) | {"offset": offset}
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/api/logs/filter",
                data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                page = json.loads(response.read())
            texts += [entry["message"] for entry in page]
            if len(page) < 200:
                return "\n".join(texts)
            offset += 200


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Tracking server, Prefect server, the tiny origin repository deployed from its prefect.yaml, one worker.

    Where PostgreSQL is installed this is the team stack: Prefect and MLflow keep their state in PostgreSQL,
    MLflow's artifacts and the DVC remote live in S3. Otherwise the laptop's sqlite files and a local remote.
    """
    base = tmp_path_factory.mktemp("prefect")
    prefect, mlflow_server, origin, team = _team_stack(request, base) if postgres_bin() else _laptop_stack(base)
    prefect.cmd("variable", "set", "visionops_repo", str(origin))
    prefect.cmd("variable", "set", "visionops_branch", "main")
    prefect.cmd("work-pool", "create", "visionops-process", "--type", "process")
    prefect.cmd("--no-prompt", "deploy", "--name", "local", cwd=origin)
    prefect.worker_proc = prefect.worker()
    prefect.origin, prefect.mlflow, prefect.team = origin, MlflowClient(mlflow_server.uri), team
    yield prefect
    prefect.stop()
    mlflow_server.stop()


def _laptop_stack(base: Path) -> tuple:
    mlflow_server = MlflowServer(base / "mlflow").start()
    prefect = PrefectStack(base, mlflow_server.uri).start()
    return prefect, mlflow_server, tiny_origin(base / "origin", str(base / "dvc-remote")), None


def _team_stack(request: pytest.FixtureRequest, base: Path) -> tuple:
    """Only configuration differs from the laptop: database URLs, S3 locations, the remote and its credentials."""
    pg, s3 = request.getfixturevalue("postgres_server"), request.getfixturevalue("s3_server")
    bucket = s3.bucket("pipeline")
    mlflow_server = MlflowServer(
        base / "mlflow",
        backend_store_uri=pg.new_database("mlflow_pipeline"),
        artifacts_destination=f"s3://{bucket}/mlflow",
        env=s3.env("MLFLOW_S3_ENDPOINT_URL"),
    ).start()
    prefect = PrefectStack(base, mlflow_server.uri, pg.new_database("prefect", "postgresql+asyncpg"), s3.env()).start()
    origin = tiny_origin(base / "origin", f"s3://{bucket}/dvc", s3.endpoint, **s3.env())
    return prefect, mlflow_server, origin, {"postgres": pg, "s3": s3, "bucket": bucket}


def _assert_in_team_stores(team: dict, flow_run_id: str, mlflow_run_id: str) -> None:
    """The flow run is a row in Prefect's PostgreSQL database; the MLflow run in MLflow's; the files in S3."""
    pg, s3, bucket = team["postgres"], team["s3"], team["bucket"]
    assert pg.query("prefect", "SELECT state_type::text FROM flow_run WHERE id = %s::uuid", (flow_run_id,)) == [
        ("COMPLETED",)
    ]
    assert pg.query("mlflow_pipeline", "SELECT status FROM runs WHERE run_uuid = %s", (mlflow_run_id,)) == [
        ("FINISHED",)
    ]
    keys = s3.keys(bucket)
    assert any(k.startswith("mlflow/") and f"/{mlflow_run_id}/artifacts/evaluation/" in k for k in keys), keys
    assert any(k.startswith("dvc/runs/") for k in keys), "the flow pushed DVC's run cache to the S3 remote"


def test_prefect_yaml_declares_the_three_work_pools_and_a_valid_schedule() -> None:
    from prefect.client.schemas.schedules import construct_schedule

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    steps = [next(iter(s)) for s in config["pull"]]
    assert steps == ["prefect.deployments.steps.git_clone", "prefect.deployments.steps.set_working_directory"]
    assert "{{ prefect.variables.visionops_repo }}" in json.dumps(config["pull"]), "the worker clones, from a URL"
    assert str(REPO) not in (REPO / "prefect.yaml").read_text(), "no path into the deploying machine's folders"
    pools = {d["name"]: d["work_pool"] for d in config["deployments"]}
    assert pools["local"]["name"] == "visionops-process"
    requests = pools["gpu-docker"]["job_variables"]["container_create_kwargs"]["device_requests"]
    assert requests[0]["capabilities"] == [["gpu"]]
    template = json.loads((REPO / "deploy/k8s-gpu-job-template.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert "gpus" in template["variables"]["properties"]
    for deployment in config["deployments"]:
        assert deployment["entrypoint"] == "flows/training_pipeline.py:training_pipeline"
        for schedule in deployment.get("schedules", []):
            parsed = construct_schedule(cron=schedule["cron"], timezone=schedule["timezone"])
            assert parsed.cron == "0 3 * * 1"
    assert "tensorflow[and-cuda]" in (REPO / "pyproject.toml").read_text()
    assert "ARG EXTRA=gpu" in (REPO / "Dockerfile").read_text(), "`docker build .` makes the GPU image"


def test_docker_deployments_build_and_push_the_image_they_run() -> None:
    """The build/push steps of prefect.yaml call prefect-docker's real step functions with arguments they accept."""
    import inspect

    steps = pytest.importorskip("prefect_docker.deployments.steps", reason="./run.sh setup --with docker")
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for deployment in (d for d in config["deployments"] if d["name"] != "local" and "process" not in d["name"]):
        for section in ("build", "push"):
            (name, kwargs), *_ = deployment[section][0].items()
            function = getattr(steps, name.rpartition(".")[2])
            inspect.signature(function).bind(**{k: v for k, v in kwargs.items() if k != "id"})
        assert deployment["build"][0]["prefect_docker.deployments.steps.build_docker_image"]["buildargs"] == {
            "EXTRA": "gpu"
        }
        assert deployment["work_pool"]["job_variables"]["image"] == "{{ build-image.image }}", deployment["name"]


def test_deployment_runs_then_a_rerun_retrains_nothing(stack) -> None:
    first = stack.trigger()
    assert stack.wait(first) == "COMPLETED", stack.logs(first)[-5000:]
    logs = stack.logs(first)
    assert "Running stage 'train'" in logs and "Running stage 'promote'" in logs
    versions = stack.mlflow.search_model_versions("name = 'visionops-sample-classifier'")
    assert len(versions) == 1 and versions[0].tags["decision"] == "promoted"
    runs = stack.mlflow.search_runs(
        experiment_ids=[stack.mlflow.get_experiment_by_name("visionops-sample").experiment_id]
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    if stack.team:
        _assert_in_team_stores(stack.team, first, runs[0].info.run_id)

    second = stack.trigger()
    assert stack.wait(second) == "COMPLETED", stack.logs(second)[-5000:]
    logs = stack.logs(second)
    assert "Running stage" not in logs, "a fresh clone restores every stage from DVC's run cache"
    assert len(stack.mlflow.search_model_versions("name = 'visionops-sample-classifier'")) == 1


def test_validation_failure_fails_the_flow_run_with_the_reason(stack) -> None:
    flow_run = stack.trigger({"overrides": ["validate.min_images_per_class=500"]})
    assert stack.wait(flow_run) == "FAILED"
    assert "validate.min_images_per_class" in stack.logs(flow_run)


def test_killed_worker_then_restarted_lets_a_rerun_complete(stack) -> None:
    flow_run = stack.trigger({"overrides": ["train.seed=7"]})
    deadline = time.monotonic() + 300
    while "Running stage 'train'" not in stack.logs(flow_run) and time.monotonic() < deadline:
        time.sleep(1)
    stack.kill(stack.worker_proc, signal.SIGKILL)  # the worker and the flow run's process with it
    stack.worker_proc = stack.worker()
    rerun = stack.trigger({"overrides": ["train.seed=7"]})
    assert stack.wait(rerun) == "COMPLETED", stack.logs(rerun)[-5000:]
    assert "Running stage 'train'" in stack.logs(rerun), "the killed run never finished training"
    exps = run(["dvc", "exp", "list", "--all-commits", "--name-only"], cwd=stack.origin).stdout
    assert exps.strip(), "the overridden run was pushed to the origin as a DVC experiment"
