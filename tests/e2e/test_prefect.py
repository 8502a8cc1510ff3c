"""The pipeline as Prefect deployments: a real `prefect server` and process worker on 127.0.0.1, prefect.yaml.

The origin repository is a copy of this checkout with a tiny generated dataset pushed to a DVC remote outside
it, so each flow run does what it does on a remote worker: clone, pull the data and run cache, run the stages.
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
from helpers import REPO, MlflowServer, cli, free_port, run, tool_env
from mlflow import MlflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TINY = {"validate": {"min_images_per_class": 3},
        "train": {"image_size": 32, "batch_size": 16, "workers": 1, "head": {"epochs": 1}, "finetune": {"epochs": 1}},
        "promote": {"min_metric": None}}  # fmt: skip
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def _tiny_origin(dest: Path, remote: Path) -> Path:
    """A git repository like this checkout, with a tiny generated dataset in a DVC remote outside the repository."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file() and not rel.startswith("dvc-remote/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((REPO / rel).read_bytes())
    (dest / "run.sh").chmod(0o755)
    params = _merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "data.dvc").unlink()
    run(cli("sample-data", "--out", "data", "--per-class", "12", "--size", "48"), cwd=dest)
    run(["git", "init", "-q", "-b", "main"], cwd=dest)
    for cmd in (["dvc", "remote", "add", "-f", "-d", "sample", str(remote)], ["dvc", "add", "-q", "data"],
                ["dvc", "push", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny origin"]):  # fmt: skip
        run(cmd, cwd=dest)
    return dest


class PrefectStack:
    """A real Prefect server on a free 127.0.0.1 port (PREFECT_HOME in a temp dir) and process workers."""

    def __init__(self, home: Path, mlflow_uri: str) -> None:
        self.port = free_port()
        self.env = tool_env(PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{self.port}/api",
                            PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_TRACKING_URI=mlflow_uri,
                            PREFECT_LOGGING_LEVEL="INFO")  # fmt: skip
        self.home, self.procs = home, []

    def spawn(self, cmd: list[str], log: str, cwd: Path | None = None) -> subprocess.Popen:
        out = open(self.home / log, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        proc = subprocess.Popen(cmd, env=self.env, cwd=cwd or self.home, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def start(self) -> PrefectStack:
        self.spawn(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)], "server.log")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError((self.home / "server.log").read_text()[-3000:])

    def cmd(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["prefect", *args], env=self.env, cwd=cwd or self.home, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
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
            request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/logs/filter",
                                             data=json.dumps(payload).encode(),
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=10) as response:
                page = json.loads(response.read())
            texts += [entry["message"] for entry in page]
            if len(page) < 200:
                return "\n".join(texts)
            offset += 200


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """Tracking server, Prefect server, the tiny origin repository deployed from its prefect.yaml, one worker."""
    base = tmp_path_factory.mktemp("prefect")
    mlflow_server = MlflowServer(base / "mlflow").start()
    prefect = PrefectStack(base, mlflow_server.uri).start()
    origin = _tiny_origin(base / "origin", base / "dvc-remote")
    prefect.cmd("variable", "set", "visionops_repo", str(origin))
    prefect.cmd("work-pool", "create", "visionops-process", "--type", "process")
    prefect.cmd("--no-prompt", "deploy", "--name", "local", cwd=origin)
    prefect.worker_proc = prefect.worker()
    prefect.origin, prefect.mlflow = origin, MlflowClient(mlflow_server.uri)
    yield prefect
    prefect.stop()
    mlflow_server.stop()


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
    assert "--extra gpu" in (REPO / "Dockerfile").read_text()


def test_deployment_runs_then_a_rerun_retrains_nothing(stack) -> None:
    first = stack.trigger()
    assert stack.wait(first) == "COMPLETED", stack.logs(first)[-5000:]
    logs = stack.logs(first)
    assert "Running stage 'train'" in logs and "Running stage 'promote'" in logs
    versions = stack.mlflow.search_model_versions("name = 'visionops-sample-classifier'")
    assert len(versions) == 1 and versions[0].tags["decision"] == "promoted"
    runs = stack.mlflow.search_runs(experiment_ids=[stack.mlflow.get_experiment_by_name("visionops-sample")
                                                     .experiment_id])  # fmt: skip
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"

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
