"""The team stack for real: images built here, `docker compose up`, deployment runs on the compose and docker pools.

A private Docker engine (tests/docker_engine.py) builds the images with docker/build-images.sh (a debootstrapped
base where Docker Hub is out of reach), then compose.yaml runs with the local stand-ins of docker/compose.local.yaml
(moto's S3 server as `minio`, a git daemon serving the origin repository): PostgreSQL, S3, MLflow, the Prefect
server, a git server and the CPU worker, published on free 127.0.0.1 ports. Flow runs clone git://git/visionops.git
on the compose network, pull the data from S3, log to the compose MLflow and push their run cache back to S3.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml
from docker_engine import DOCKER, DockerEngine, build_images, unavailable
from helpers import REPO, free_port, run, stop_group, tiny_origin, tool_env
from mlflow import MlflowClient
from servers import PrefectClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker]
PROJECT = "visionops-e2e"  # compose project: containers, network visionops-e2e_default, volumes visionops-e2e_*
LONG_RUNNING = {"postgres", "minio", "mlflow", "prefect-server", "git", "cpu-worker"}
STAND_INS = {"POSTGRES_IMAGE": "visionops-postgres:15-bookworm", "VISIONOPS_S3_IMAGE": "visionops-s3:moto-5.2.5"}
SECRETS = (
    "POSTGRES_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "PREFECT_DB_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "VISIONOPS_S3_SECRET_KEY",
    "PREFECT_AUTH_PASSWORD",
)
UID = 10001  # the images' user: owner of the served git repository
MODEL, EXPERIMENT = "visionops-sample-classifier", "visionops-sample"


class ComposeStack:
    """compose.yaml + docker/compose.local.yaml, profiles servers and cpu, on ``engine``, settings in ``root/.env``."""

    def __init__(self, engine: DockerEngine, root: Path) -> None:
        self.engine, self.root, self.git_root = engine, root, root / "git"
        self.ports = {name: free_port() for name in ("MLFLOW_PORT", "PREFECT_PORT", "MINIO_PORT", "MINIO_CONSOLE_PORT")}
        example = (REPO / ".env.example").read_text().splitlines()
        self.settings = dict(line.split("=", 1) for line in example if line and not line.startswith("#"))
        self.settings |= {name: secrets.token_hex(16) for name in SECRETS}  # as a team fills them in
        self.settings |= STAND_INS | {name: str(port) for name, port in self.ports.items()}
        prefect = f"http://127.0.0.1:{self.ports['PREFECT_PORT']}"
        self.settings |= {
            "MLFLOW_WORKERS": "1",
            "VISIONOPS_GIT_ROOT": str(self.git_root),
            "PREFECT_UI_API_URL": f"{prefect}/api",
        }
        # What clients and workers send to the Prefect server (compose.yaml requires basic auth on it).
        self.prefect_auth = f"{self.settings['PREFECT_AUTH_USERNAME']}:{self.settings['PREFECT_AUTH_PASSWORD']}"
        (root / ".env").write_text("".join(f"{key}={value}\n" for key, value in self.settings.items()))
        files = ["-f", str(REPO / "compose.yaml"), "-f", str(REPO / "docker/compose.local.yaml")]
        self.base = [DOCKER, "compose", "--project-name", PROJECT, "--project-directory", str(REPO), *files]
        self.base += ["--env-file", str(root / ".env"), "--profile", "servers", "--profile", "cpu"]
        self.mlflow_uri, self.prefect_url = f"http://127.0.0.1:{self.ports['MLFLOW_PORT']}", prefect
        self.s3_endpoint = f"http://127.0.0.1:{self.ports['MINIO_PORT']}"

    def compose(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run ``docker compose ARGS`` for this project."""
        return run([*self.base, *args], cwd=self.root, check=check, timeout=timeout, **self.engine.env)

    def containers(self) -> dict[str, dict]:
        """The project's containers by service (``docker compose ps -a``): State, Health, ExitCode, Publishers."""
        out = self.compose("ps", "-a", "--format", "json").stdout
        return {entry["Service"]: entry for entry in map(json.loads, out.splitlines())}

    def up(self, timeout: float = 900) -> float:
        """`up -d`, then wait until every long-running service is healthy and `buckets` exited 0; the seconds taken.

        Raises:
            AssertionError: a service failed, or not all were healthy after ``timeout`` s (with their logs).
        """
        start = time.monotonic()
        self.compose("up", "-d")
        while time.monotonic() - start < timeout:
            found = self.containers()
            health = {name: found.get(name, {}).get("Health") for name in LONG_RUNNING}
            buckets = found.get("buckets", {})
            assert not (buckets.get("State") == "exited" and buckets.get("ExitCode")), self.logs("buckets")
            assert "unhealthy" not in health.values(), self.logs(*(n for n, h in health.items() if h == "unhealthy"))
            if set(health.values()) == {"healthy"} and buckets.get("State") == "exited":
                return time.monotonic() - start
            time.sleep(3)
        raise AssertionError(f"not healthy after {timeout} s: {health}\n{self.logs()}")

    def logs(self, *services: str) -> str:
        """The last lines of the services' logs (all services without arguments)."""
        return self.compose("logs", "--no-color", "--tail", "60", *services, check=False).stdout

    def s3(self):
        """A boto3 client of the S3 service's published port (the stand-in accepts the .env keys, as MinIO does)."""
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.settings["VISIONOPS_S3_ACCESS_KEY"],
            aws_secret_access_key=self.settings["VISIONOPS_S3_SECRET_KEY"],
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``."""
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def psql(self, database: str, sql: str) -> list[list[str]]:
        """Rows of ``sql`` run by psql inside the postgres container (PostgreSQL is not published)."""
        out = self.compose("exec", "-T", "postgres", "psql", "-U", "postgres", "-d", database, "-AtF", "\t", "-c", sql)
        return [line.split("\t") for line in out.stdout.splitlines()]


@pytest.fixture(scope="module")
def engine():
    """The private engine; skips with the reason where it cannot be installed or started."""
    reason = unavailable()
    if reason:
        pytest.skip(f"no Docker engine: {reason}")
    try:
        engine = DockerEngine().start()
    except RuntimeError as exc:
        pytest.skip(f"the Docker engine does not start on this machine: {exc}")
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def stack(engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory):
    """Images built, the stack up and healthy, the tiny origin pushed to S3 and served by the git service."""
    compose = ComposeStack(engine, tmp_path_factory.mktemp("compose"))
    # The engine's data root is a machine-level cache: an interrupted earlier run may have left this project's
    # containers (which dockerd restarts: `restart: unless-stopped`) and volumes (PostgreSQL with other passwords).
    compose.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")
    seconds, report = build_images(engine, REPO)
    print(f"docker/build-images.sh: {seconds:.0f} s\n{report}")
    compose.git_root.mkdir()
    shutil.chown(compose.git_root, UID, UID)
    try:
        print(f"first `up` healthy in {compose.up():.0f} s")
        s3_env = {
            "AWS_ACCESS_KEY_ID": compose.settings["VISIONOPS_S3_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_SECRET_ACCESS_KEY": compose.settings["VISIONOPS_S3_SECRET_KEY"],
            "AWS_ENDPOINT_URL_S3": compose.s3_endpoint,
        }
        origin = tiny_origin(compose.root / "origin", "s3://dvc/store", **s3_env)
        served = compose.git_root / "visionops.git"
        run(["git", "clone", "-q", "--bare", str(origin), str(served)], cwd=compose.root)
        run(["chown", "-R", f"{UID}:{UID}", str(served)], cwd=compose.root)
        env = tool_env(
            PREFECT_API_URL=f"{compose.prefect_url}/api",
            PREFECT_HOME=str(compose.root / "prefect"),
            PREFECT_API_AUTH_STRING=compose.prefect_auth,
            VISIONOPS_IMAGE="visionops",
            **engine.env,
        )
        compose.prefect = PrefectClient(f"{compose.prefect_url}/api", env, origin)
        compose.prefect.cmd("variable", "set", "visionops_repo", "git://git/visionops.git")
        compose.prefect.cmd("variable", "set", "visionops_branch", "main")
        compose.mlflow, compose.origin, compose.served = MlflowClient(compose.mlflow_uri), origin, served
        with pytest.MonkeyPatch.context() as patch:
            # This process is a laptop outside the compose network: MLflow 3.17 would download artifacts straight
            # from S3 with presigned URLs naming the server's endpoint, http://minio:9000, which only that network
            # resolves. Through the server instead (docs/scaling.md, "Laptops and other hosts").
            patch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
            yield compose
    finally:
        compose.compose("down", "--volumes", "--remove-orphans", check=False)


def _listening(port: int) -> set[str]:
    """The local addresses something listens on at TCP ``port`` (from ``ss``: reads this machine's sockets only)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines()}


def test_deployment_run_on_the_compose_cpu_worker_lands_in_postgres_s3_and_mlflow(stack: ComposeStack) -> None:
    stack.prefect.cmd("--no-prompt", "deploy", "--name", "training-pipeline/local")
    flow_run = stack.prefect.trigger()
    assert stack.prefect.wait(flow_run, timeout=1200) == "COMPLETED", stack.prefect.logs(flow_run)[-5000:]
    assert "Running stage 'train'" in stack.prefect.logs(flow_run)
    assert stack.psql("prefect", f"SELECT state_type FROM flow_run WHERE id = '{flow_run}'") == [["COMPLETED"]]

    experiment = stack.mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    (logged,) = stack.mlflow.search_runs([experiment])
    run_id = logged.info.run_id
    assert stack.psql("mlflow", f"SELECT status FROM runs WHERE run_uuid = '{run_id}'") == [["FINISHED"]]
    # The files are in S3, written there by the MLflow server, and read back through it.
    key = f"artifacts/{experiment}/{run_id}/artifacts/config/params.yaml"
    assert key in stack.keys("mlflow", f"artifacts/{experiment}/{run_id}/")
    stored = stack.s3().get_object(Bucket="mlflow", Key=key)["Body"].read()
    served = Path(stack.mlflow.download_artifacts(run_id, "config/params.yaml", str(stack.root)))
    assert served.read_bytes() == stored and yaml.safe_load(stored)["train"]["image_size"] == 32
    assert any(key.startswith("store/runs/") for key in stack.keys("dvc")), "the run cache went to the S3 remote"

    (version,) = stack.mlflow.search_model_versions(f"name = '{MODEL}'")
    assert version.run_id == run_id and version.tags["decision"] == "promoted"
    aliases = stack.mlflow.get_model_version(MODEL, version.version).aliases
    assert set(aliases) == {"champion", "challenger"}, aliases


def test_published_uis_answer_on_loopback_only(stack: ComposeStack) -> None:
    for url, marker in ((stack.prefect_url, b"<html"), (stack.mlflow_uri, b"<html")):
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert page.status == 200 and marker in page.read(4096).lower(), url
    # Publishers also lists the ports an image exposes without publishing them (PublishedPort 0).
    ports = {name: [p for p in entry["Publishers"] if p["PublishedPort"]] for name, entry in stack.containers().items()}
    published = {name: found for name, found in ports.items() if found}
    assert set(published) == {"mlflow", "prefect-server", "minio"}, "postgres, git and the worker publish nothing"
    for name, ports in published.items():
        for port in ports:
            assert port["URL"] == "127.0.0.1", (name, port)
            assert _listening(port["PublishedPort"]) == {"127.0.0.1"}, (name, port)


def test_cpu_docker_deployment_runs_in_a_container_of_the_built_image(stack: ComposeStack) -> None:
    prefect, started = stack.prefect, time.time()
    template = json.loads(prefect.cmd("work-pool", "get-default-base-job-template", "--type", "docker").stdout)
    # Once per pool: where flow-run containers run and what they reach (the compose network's service names).
    defaults = {
        "networks": [f"{PROJECT}_default"],
        "env": {
            "PREFECT_API_URL": "http://prefect-server:4200/api",
            "PREFECT_API_AUTH_STRING": stack.prefect_auth,
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "AWS_ENDPOINT_URL_S3": "http://minio:9000",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": stack.settings["VISIONOPS_S3_ACCESS_KEY"],
            "AWS_SECRET_ACCESS_KEY": stack.settings["VISIONOPS_S3_SECRET_KEY"],
            "PREFECT_HOME": "/tmp/prefect",
        },
    }
    for name, value in defaults.items():
        template["variables"]["properties"][name]["default"] = value
    (pool := stack.root / "docker-pool.json").write_text(json.dumps(template))
    prefect.cmd("work-pool", "create", "visionops-cpu-docker", "--type", "docker", "--base-job-template", str(pool))
    # The build step of prefect.yaml, as a user runs it: on this engine, from the image cache of build-images.sh.
    for cert in (REPO / "docker/certs").glob("*.crt"):
        shutil.copy(cert, stack.origin / "docker/certs" / cert.name)
    base = "visionops-base:bookworm-python3.11"
    has_own_base = run([DOCKER, "image", "inspect", base], cwd=stack.root, check=False, **stack.engine.env)
    prefect.env["VISIONOPS_BASE_IMAGE"] = base if has_own_base.returncode == 0 else ""
    # On an engine whose build cache is empty the build step builds the image from scratch: 265 s alone on
    # 2 cores (2026-12-02), and more than 300 s while other work shares the cores.
    prefect.cmd("--no-prompt", "deploy", "--name", "cpu-docker", timeout=1200)

    log = open(stack.root / "docker-worker.log", "ab")  # noqa: SIM115 - closed below
    cmd = ["prefect", "worker", "start", "--pool", "visionops-cpu-docker", "--type", "docker"]
    worker = subprocess.Popen(
        cmd, env=prefect.env, cwd=stack.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        flow_run = prefect.trigger({"overrides": ["train.seed=3"]}, "training-pipeline/cpu-docker")
        state = prefect.wait(flow_run, timeout=1200)
    finally:
        stop_group(worker)
        log.close()
    worker_log = (stack.root / "docker-worker.log").read_text(errors="replace")[-3000:]
    assert state == "COMPLETED", prefect.logs(flow_run)[-5000:] + worker_log
    logs = prefect.logs(flow_run)
    assert "Running stage 'train'" in logs and "train.seed=3" in logs

    # Its container: created from the built image, on the compose network, and removed once the run ended.
    container = prefect.flow_run(flow_run)["infrastructure_pid"].rsplit(":", 1)[-1]
    # The run is Completed once its process exits; Docker removes the container right after ("removing").
    deadline = time.monotonic() + 120
    while stack.engine.docker("ps", "-aq", "--filter", f"id={container}").stdout.strip():
        assert time.monotonic() < deadline, f"container {container} still there 120 s after its run completed"
        time.sleep(1)
    window = ["--since", str(int(started)), "--until", str(int(time.time()) + 1)]
    events = stack.engine.docker("events", *window, "--filter", f"container={container}", "--format", "{{json .}}")
    seen = [json.loads(line) for line in events.stdout.splitlines()]
    lifecycle = [event["Action"] for event in seen if event["Action"] in ("create", "start", "die", "destroy")]
    assert lifecycle == ["create", "start", "die", "destroy"], seen
    assert {e["Actor"]["Attributes"]["image"] for e in seen} == {"visionops:cpu"}

    # It trained and logged to the compose MLflow; its DVC experiment was pushed to the served repository.
    experiment = stack.mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    seeds = {r.data.params["train.seed"]: r.info.status for r in stack.mlflow.search_runs([experiment])}
    assert seeds["3"] == "FINISHED", seeds
    assert len(stack.mlflow.search_model_versions(f"name = '{MODEL}'")) == 2
    # The served repository belongs to the git daemon's user (UID 10001), not to this test's.
    refs = run(["git", "-c", f"safe.directory={stack.served}", "for-each-ref", "refs/exps"], cwd=stack.served).stdout
    assert refs.strip(), "dvc exp push origin reached git://git/visionops.git"


def test_down_leaves_no_container_and_up_keeps_the_volumes(stack: ComposeStack) -> None:
    experiment = stack.mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    before = {r.info.run_id: r.info.status for r in stack.mlflow.search_runs([experiment])}
    assert before, "the earlier tests logged runs"
    run_id = next(iter(before))
    params = Path(stack.mlflow.download_artifacts(run_id, "config/params.yaml", str(stack.root))).read_bytes()

    stack.compose("down")
    label = f"label=com.docker.compose.project={PROJECT}"
    assert not stack.engine.docker("ps", "-aq", "--filter", label).stdout.strip(), "no container left"
    assert not stack.engine.docker("network", "ls", "-q", "--filter", label).stdout.strip(), "no network left"
    volumes = stack.engine.docker("volume", "ls", "--format", "{{.Name}}", "--filter", label).stdout.split()
    assert {f"{PROJECT}_postgres-data", f"{PROJECT}_minio-data"} <= set(volumes)

    print(f"second `up` healthy in {stack.up():.0f} s")
    assert {r.info.run_id: r.info.status for r in stack.mlflow.search_runs([experiment])} == before
    (stack.root / "again").mkdir()
    again = Path(stack.mlflow.download_artifacts(run_id, "config/params.yaml", str(stack.root / "again")))
    assert again.read_bytes() == params, "the artifacts survived in the S3 volume"
    assert stack.mlflow.get_model_version_by_alias(MODEL, "champion").run_id in before
