"""The compose stack (compose.yaml, .env.example, Dockerfile): profiles, health, bindings, secrets, GPU reservations.

Read as text and YAML, since no Docker engine runs here; when a compose client is installed (`docker compose` or
`docker-compose`), it also resolves every profile with the documented variables, as `docker compose config` would.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import REPO, run

PROFILES = {
    "servers": {"postgres", "minio", "buckets", "mlflow", "prefect-server"},
    "cpu": {"cpu-worker"},
    "gpu": {"gpu-worker"},
}
ONE_SHOT = {"buckets"}  # runs to completion; everything else is long-running
BIND = "${VISIONOPS_BIND:-127.0.0.1}:"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; `$${...}` is escaped for the container.
VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
SECRET = re.compile(r"PASSWORD|SECRET")


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's `!override` tag (replace, do not merge, the value of the file below) read as the value."""


ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node))


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (REPO / "compose.yaml").read_text()


@pytest.fixture(scope="module")
def services(compose_text: str) -> dict[str, dict]:
    return yaml.safe_load(compose_text)["services"]


@pytest.fixture(scope="module")
def documented() -> dict[str, str]:
    """The variables .env.example sets, with their example values."""
    lines = (REPO / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_each_profile_starts_its_services(services: dict[str, dict]) -> None:
    found: dict[str, set[str]] = {}
    for name, service in services.items():
        assert len(service.get("profiles", [])) == 1, f"{name}: one profile each, so no profile starts a surprise"
        found.setdefault(service["profiles"][0], set()).add(name)
    assert found == PROFILES


def test_long_running_services_restart_and_report_health(services: dict[str, dict]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        assert service.get("restart") == "unless-stopped", f"{name}: no restart policy"
        check = service.get("healthcheck", {})
        assert check.get("test") and check.get("interval") and check.get("retries"), f"{name}: no healthcheck"


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict]) -> None:
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec["condition"] == expected, f"{name} → {dependency}"
    assert set(services["mlflow"]["depends_on"]) == {"postgres", "minio", "buckets"}
    assert set(services["prefect-server"]["depends_on"]) == {"postgres"}
    for worker in ("cpu-worker", "gpu-worker"):  # optional: a worker-only host has no servers in its project
        assert all(spec["required"] is False for spec in services[worker]["depends_on"].values()), worker


def test_published_ports_bind_to_the_configured_interface_only(services: dict[str, dict]) -> None:
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert set(published) == {"minio", "mlflow", "prefect-server"}, "postgres and the workers are not published"
    for name, ports in published.items():
        for port in ports:
            assert isinstance(port, str) and port.startswith(BIND), f"{name}: {port} must start with {BIND}"


def test_mlflow_stores_runs_in_postgres_and_serves_s3_artifacts(services: dict[str, dict]) -> None:
    mlflow = services["mlflow"]
    command, env = mlflow["command"], mlflow["environment"]
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the image has psycopg2.
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:${MLFLOW_DB_PASSWORD:?")
    assert command[command.index("--artifacts-destination") + 1].startswith("s3://")
    assert "--serve-artifacts" in command and "--workers" in command
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["entrypoint"] == ["sh", "/etc/visionops/mlflow-server.sh"]
    script = (REPO / "docker/mlflow-server.sh").read_text()
    assert '"${MLFLOW_BASIC_AUTH:-false}"' in script and 'exec "$@" --app-name basic-auth' in script


def test_prefect_server_uses_postgres_with_asyncpg(services: dict[str, dict]) -> None:
    url = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://prefect:${PREFECT_DB_PASSWORD:?")
    assert url.endswith("@postgres:5432/prefect")
    init = (REPO / "docker/postgres-init.sh").read_text()
    assert "CREATE DATABASE mlflow OWNER mlflow" in init and "CREATE DATABASE prefect OWNER prefect" in init


def test_prefect_server_requires_basic_auth_and_workers_send_it(services: dict[str, dict]) -> None:
    """The server refuses requests without user:password (Prefect 3's basic auth); each worker sends the same one.
    tests/reliability/test_security.py checks a real server started this way refuses strangers."""
    server = services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    required = "${PREFECT_AUTH_PASSWORD:?set PREFECT_AUTH_PASSWORD in .env (see .env.example)}"
    assert server == "${PREFECT_AUTH_USERNAME:-admin}:" + required
    for worker in ("cpu-worker", "gpu-worker"):
        assert services[worker]["environment"]["PREFECT_API_AUTH_STRING"] == server, worker
    assert "PREFECT_API_AUTH_STRING" not in services["mlflow"]["environment"], "only Prefect's clients get it"


def test_workers_poll_prefect_yaml_pools_and_reach_the_servers(services: dict[str, dict]) -> None:
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    # The sweep's own "local" deployment runs on the control pool of ./run.sh up, not on compose's workers.
    pools = {d["name"]: d["work_pool"]["name"] for d in deployments if d["entrypoint"].startswith("flows/training")}
    expected = {"cpu-worker": pools["local"], "gpu-worker": pools["gpu-process"]}
    for worker, pool in expected.items():
        command, env = services[worker]["command"], services[worker]["environment"]
        assert command[:3] == ["prefect", "worker", "start"] and command[command.index("--pool") + 1] == pool
        assert command[command.index("--type") + 1] == "process" and "--with-healthcheck" in command
        assert {
            "PREFECT_API_URL",
            "MLFLOW_TRACKING_URI",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL_S3",
        } <= set(env), worker
        assert not {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"} & set(env), f"{worker} gets no server secret"


def test_only_the_gpu_worker_reserves_nvidia_gpus(services: dict[str, dict]) -> None:
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "${VISIONOPS_GPU_COUNT:-1}", "capabilities": ["gpu"]}]
    assert services["gpu-worker"]["build"]["args"]["EXTRA"] == "gpu"
    for name, service in services.items():
        if name != "gpu-worker":
            assert "deploy" not in service, f"{name} reserves no devices"


def test_every_variable_is_documented_and_no_secret_has_a_default(compose_text: str, documented: dict) -> None:
    used = VARIABLE.findall(compose_text + (REPO / "docker/compose.local.yaml").read_text())
    assert used, "the pattern finds compose.yaml's variables"
    assert {name for name, _, _ in used} <= set(documented), "every ${VAR} of both compose files is in .env.example"
    for name, operator, value in used:
        if SECRET.search(name):
            assert operator == ":?" or (operator == ":-" and value == ""), f"{name}: a secret never has a default"
            assert documented[name] == "", f".env.example: {name} is left for each team to set"


def test_images_and_dockerfile_are_pinned_and_non_root(services: dict[str, dict]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG DEFAULT_BASE_IMAGE=(\S+)$", dockerfile, flags=re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base.group(1)), "pin an exact python 3.11.x tag"
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1:]
    chosen = "${BASE_IMAGE:-$DEFAULT_BASE_IMAGE}"  # BASE_IMAGE if set and not empty
    assert [stage.split("\n")[0] for stage in stages] == [f"{chosen} AS env", "env AS project", chosen]
    users = re.findall(r"^USER (\S+)", stages[-1], flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image ends as a non-root user"
    assert "docker/certs/" in stages[0] and "certs" not in stages[-1], "proxy CA certificates stay in the build stages"
    copied = re.findall(r"^COPY --from=(\S+) (\S+)", stages[-1], flags=re.MULTILINE)
    assert copied == [("env", "/opt/visionops/.venv"), ("project", "/project/")], "the environment, then the project"
    assert "ARG EXTRA=gpu" in dockerfile and 'uv sync --frozen --no-dev --no-editable --extra "${EXTRA}"' in dockerfile
    assert not re.search(r"^(# syntax=|RUN --mount)", dockerfile, re.MULTILINE), "no BuildKit-only syntax"
    uv_pin = re.search(r"^ARG UV_VERSION=(\S+)$", dockerfile, flags=re.MULTILINE).group(1)
    assert f"UV_VERSION={uv_pin}\n" in (REPO / "run.sh").read_text(), "the image and run.sh use the same uv"
    for name, service in services.items():
        image = re.sub(r"\$\{\w+:-(.*)\}", r"\1", service["image"])  # the default an unset variable resolves to
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag, not {image}"


def test_local_stand_ins_keep_minio_s_name_port_and_settings(services: dict[str, dict]) -> None:
    """docker/compose.local.yaml: moto's S3 server as `minio`, a git daemon on the project's network only."""
    local = yaml.load((REPO / "docker/compose.local.yaml").read_text(), ComposeLoader)["services"]
    assert set(local) == {"minio", "buckets", "git"}
    assert local["minio"]["ports"] == [port for port in services["minio"]["ports"] if port.endswith(":9000")]
    assert local["minio"]["image"].startswith("${VISIONOPS_S3_IMAGE:-visionops-s3:moto-")
    assert local["buckets"]["entrypoint"][-1] == "buckets" and local["git"]["profiles"] == ["servers"]
    assert "ports" not in local["git"], "the git daemon (anonymous push) is never published"
    dockerfile = (REPO / "docker/s3-moto.Dockerfile").read_text()
    moto = re.search(r"^ARG MOTO_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert f'"moto[server]=={moto.group(1)}"' in (REPO / "pyproject.toml").read_text(), "the moto of the tests"
    lock = (REPO / "uv.lock").read_text()
    for name, version in re.findall(r" (flask(?:-cors)?)==(\S+)", dockerfile):
        assert f'name = "{name}"\nversion = "{version}"' in lock, f"{name}: the version of uv.lock"
    assert local["minio"]["image"].endswith(f"moto-{moto.group(1)}}}")


def test_env_file_stays_out_of_git() -> None:
    ignored = run(["git", "check-ignore", "--no-index", "-q", ".env"], cwd=REPO, check=False)
    assert ignored.returncode == 0, ".env (the team's passwords) must be git-ignored"
    context = (REPO / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".tools", "data", "artifacts", "mlruns", ".dvc/cache"} <= set(context)


def compose_client() -> list[str] | None:
    """`docker compose` (plugin) or `docker-compose`, whichever is installed; None when neither is."""
    if shutil.which("docker") and run(["docker", "compose", "version"], cwd=REPO, check=False).returncode == 0:
        return ["docker", "compose"]
    return [found] if (found := shutil.which("docker-compose")) else None


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_compose_client_accepts_each_profile(profile: str, documented: dict, tmp_path: Path) -> None:
    client = compose_client()
    if client is None:
        pytest.skip("no compose client: install the Docker Compose plugin (or docker-compose) to run this check")
    # The example with its empty secrets filled in, as a team's .env would be.
    env = "".join(f"{key}={value or 'filled' + key.lower()}\n" for key, value in documented.items())
    (tmp_path / ".env").write_text(env)
    base = [*client, "--file", str(REPO / "compose.yaml"), "--env-file", str(tmp_path / ".env"), "--profile", profile]
    run([*base, "config", "-q"], cwd=tmp_path)
    resolved = yaml.safe_load(run([*base, "config"], cwd=tmp_path).stdout)
    assert set(resolved["services"]) == PROFILES[profile]
    for service in resolved["services"].values():
        assert all(port["host_ip"] == "127.0.0.1" for port in service.get("ports", []))
    missing = env.replace(f"POSTGRES_PASSWORD={'filled' + 'postgres_password'}", "POSTGRES_PASSWORD=")
    (tmp_path / ".env").write_text(missing)
    refused = run([*base, "config", "-q"], cwd=tmp_path, check=False)
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD in .env" in refused.stderr


def test_compose_client_swaps_in_the_local_stand_ins(documented: dict, tmp_path: Path) -> None:
    client = compose_client()
    if client is None or client[0] != "docker":
        pytest.skip("no Docker Compose v2 (docker/install-engine.sh installs it): `!override` needs it")
    env = "".join(f"{key}={value or 'filled' + key.lower()}\n" for key, value in documented.items())
    (tmp_path / ".env").write_text(env + f"VISIONOPS_GIT_ROOT={tmp_path / 'git'}\n")
    files = ["--file", str(REPO / "compose.yaml"), "--file", str(REPO / "docker/compose.local.yaml")]
    base = [*client, *files, "--env-file", str(tmp_path / ".env"), "--profile", "servers"]
    resolved = yaml.safe_load(run([*base, "config"], cwd=tmp_path).stdout)["services"]
    assert set(resolved) == PROFILES["servers"] | {"git"}
    assert resolved["minio"]["image"] == "visionops-s3:moto-5.2.5" and resolved["minio"]["command"] == ["serve"]
    assert [(p["host_ip"], p["target"]) for p in resolved["minio"]["ports"]] == [("127.0.0.1", 9000)]
    assert resolved["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000", "same settings"
    assert resolved["git"]["volumes"][0]["source"] == str(tmp_path / "git") and "ports" not in resolved["git"]
