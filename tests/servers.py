"""The test servers, as a pytest plugin (tests/conftest.py loads it): every server a test needs, and its fixture.

Each server is a real process on 127.0.0.1 on a free port, in a process group of its own, stopped by PID in the
fixture's teardown; its files and logs stay under pytest's temporary folders (PostgreSQL, which refuses to run as
root, gets a folder of its own that it removes). Tests use the fixtures only:

| fixture | scope | what |
|---|---|---|
| ``mlflow_server`` | function | `mlflow server` on sqlite with local artifacts (the laptop setup) |
| ``mlflow_module`` | module | the same, shared by a module's tests (each uses its own registered models) |
| ``auth_mlflow_server`` | module | `mlflow server --app-name basic-auth` (the team server's auth) |
| ``postgres_server`` | session | PostgreSQL; skips with the install hint where its binaries are absent |
| ``s3_server`` | session | an S3 API (moto's server); tests create their own buckets |
| ``s3_server_down`` | function | an S3 API not started yet: its endpoint refuses until the test calls ``start()`` |
| ``team_mlflow`` | module | `mlflow server` on PostgreSQL proxying artifacts to S3 (the team setup) |
| ``visionops_ui`` | function | a factory: `visionops ui` in a project, answering /health |
| ``serve_model`` | function | a factory: `mlflow models serve` of a model URI, answering /ping |
| ``prefect_pipeline`` | module | Prefect server + worker, the tiny origin deployed from its prefect.yaml, MLflow |
| ``auth_prefect_server`` | module | a Prefect server requiring basic auth (PREFECT_SERVER_API_AUTH_STRING) |
| ``tiny_user`` | module | a new user's fresh clone (tiny sample), plain shell; `./run.sh down` stops what they start |
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    free_port,
    mark_project,
    spawn,
    stop_group,
    tiny_origin,
    tool_env,
    venv_tool,
    wait_until_up,
)

from visionops.stack.supervisor import mlflow_server_env

# --- MLflow --------------------------------------------------------------------------------------------------------


class MlflowServer:
    """A real `mlflow server` process on 127.0.0.1, started and stopped by PID.

    By default the laptop setup: a sqlite backend and local artifacts under ``root``. The team setup is the same
    server with ``backend_store_uri`` (e.g. ``postgresql://...``) and ``artifacts_destination``
    (``s3://bucket/prefix``): artifacts are then proxied through the server, so only the server's ``env`` holds
    the S3 endpoint and credentials and clients need nothing but MLFLOW_TRACKING_URI. ``app_name`` picks another
    server app (``basic-auth``).
    """

    def __init__(
        self,
        root: Path,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        env: dict[str, str] | None = None,
        app_name: str | None = None,
    ) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
        # The project's own server settings (job execution off), then the test's.
        self.env = {**mlflow_server_env(), **(env or {})}
        self.artifacts_destination, self.app_name = artifacts_destination, app_name
        self.proc = None

    def command(self) -> list[str]:
        """The `mlflow server` command line for this store, artifact location and app."""
        cmd = [venv_tool("mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        cmd += ["--backend-store-uri", self.backend_store_uri]
        if self.artifacts_destination:
            cmd += ["--serve-artifacts", "--artifacts-destination", self.artifacts_destination]
        else:
            cmd += ["--default-artifact-root", (self.root / "artifacts").as_uri()]
        return [*cmd, "--app-name", self.app_name] if self.app_name else cmd

    def start(self, timeout: float = 120) -> MlflowServer:
        """Start it (again: same port, same store) and wait until /health answers."""
        self.proc = start_server(
            self.command(), self.root / "server.log", self.uri + "/health", "mlflow", timeout, self.env
        )
        return self

    def stop(self) -> None:
        stop_group(self.proc)  # the server and its uvicorn workers
        self.proc = None


def start_server(
    cmd: list[str], log: Path, url: str, what: str, timeout: float, env: dict | None = None, cwd: Path | None = None
):
    """:func:`helpers.spawn` a server and wait until ``url`` answers.

    Raises:
        RuntimeError: it exited or did not answer within ``timeout`` s (it is stopped first); ends with its log.
    """
    proc = spawn(cmd, log, env, cwd)
    try:
        wait_until_up(url, proc, log, timeout, what)
    except RuntimeError:
        stop_group(proc)
        raise
    return proc


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A running MLflow tracking server for one test (``stop()``/``start()`` it to stage an outage)."""
    server = MlflowServer(tmp_path / "mlflow-server").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One MLflow tracking server for a module's tests (each uses its own registered model names)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


AUTH_ADMIN_PASSWORD = "visionops-test-admin"  # a throwaway server's admin password, never a real one


@pytest.fixture(scope="module")
def auth_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A basic-auth tracking server, as compose.yaml runs it; its admin password is :data:`AUTH_ADMIN_PASSWORD`
    (``server.admin_password``). Needs `mlflow[auth]` (Flask-WTF)."""
    pytest.importorskip("flask_wtf", reason="mlflow's basic-auth app needs Flask-WTF (pip install 'mlflow[auth]')")
    base = tmp_path_factory.mktemp("auth")
    config = base / "auth.ini"
    config.write_text(
        f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{base / 'auth.db'}\n"
        "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": AUTH_ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "tests-only-csrf-key",  # the auth app refuses to start without one
    }
    server = MlflowServer(base / "server", env=env, app_name="basic-auth").start()
    server.admin_password = AUTH_ADMIN_PASSWORD
    yield server
    server.stop()


# --- PostgreSQL ----------------------------------------------------------------------------------------------------

PG_MISSING = "PostgreSQL binaries (initdb/pg_ctl) not found: apt-get install postgresql"
PG_PASSWORD = "visionops-test-only"  # a throwaway server's superuser password, never a real one


def postgres_bin() -> Path | None:
    """The folder holding initdb and postgres: from PATH, else Debian's /usr/lib/postgresql/<major>/bin.

    (apt's postgresql package keeps the server binaries off PATH.)
    """
    import shutil

    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


class PostgresServer:
    """A real PostgreSQL server: initdb into a fresh folder, 127.0.0.1 on a free port, its socket in that folder.

    Postgres refuses to run as root, so under root the server runs as ``nobody``, from a folder of its own
    outside pytest's root-only temp tree. Stopped by PID (SIGINT: fast shutdown) and the folder removed.
    """

    def __init__(self) -> None:
        self.port, self.proc, self.root = free_port(), None, None
        self.password = PG_PASSWORD
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError(PG_MISSING)

    def _as_owner(self) -> dict:
        """Popen arguments that drop root to ``nobody``; nothing when not root."""
        import pwd

        if os.geteuid() != 0:
            return {}
        user = pwd.getpwnam("nobody")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _init(self) -> None:
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="visionops-pg-"))
        (self.root / "pwfile").write_text(self.password + "\n")
        owner = self._as_owner()
        if owner:
            for path in (self.root, self.root / "pwfile"):
                os.chown(path, owner["user"], owner["group"])
        cmd = [str(self.bin / "initdb"), "-D", str(self.root / "data"), "-U", "postgres"]
        cmd += ["--pwfile", str(self.root / "pwfile"), "--auth-local=trust", "--auth-host=scram-sha-256"]
        cmd += ["--no-locale", "-E", "UTF8", "--no-sync", "--no-instructions"]
        done = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=120, **owner)
        if done.returncode != 0:
            raise RuntimeError(f"initdb exited {done.returncode}: {done.stdout}{done.stderr}")

    def start(self, timeout: float = 60) -> PostgresServer:
        self._init()
        return self._run(timeout)

    def restart(self, down_s: float = 0, timeout: float = 60) -> None:
        """Stop the server (fast shutdown: clients are cut off) and start it again on the same port and data, as a
        database host's restart does; ``down_s`` seconds in between."""
        stop_group(self.proc, signal.SIGINT)
        time.sleep(down_s)
        self._run(timeout)

    def _run(self, timeout: float) -> PostgresServer:
        import psycopg2

        assert self.root is not None
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - kept open for the process's lifetime
        # fsync off: a test database is thrown away, durability only costs time here.
        cmd = [str(self.bin / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port), "-k", str(self.root)]
        cmd += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"]
        self.proc = subprocess.Popen(
            cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as_owner()
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.query("postgres", "SELECT 1")
                return self
            except psycopg2.OperationalError:  # not accepting connections yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    text = (self.root / "server.log").read_text(errors="replace")[-3000:]
                    self.stop()
                    raise RuntimeError(f"postgres did not start on 127.0.0.1:{self.port}: {text}") from None
                time.sleep(0.2)

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """A SQLAlchemy URL of ``database``: psycopg2 for MLflow, ``postgresql+asyncpg`` for Prefect.

        (SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which is not installed: name the driver.)
        """
        return f"{driver}://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str, driver: str = "postgresql+psycopg2") -> str:
        """Create database ``name`` (each server gets its own, as in the team stack); returns its URL."""
        self.query("postgres", f'CREATE DATABASE "{name}"', fetch=False)
        return self.url(name, driver)

    def query(self, database: str, sql: str, args: tuple = (), fetch: bool = True) -> list[tuple]:
        """Run one statement over TCP with the password, as the servers do; the rows it returns."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=self.password,
            dbname=database,
            connect_timeout=5,
        )
        conn.autocommit = True  # (CREATE DATABASE refuses to run inside a transaction)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall() if fetch else []
        finally:
            conn.close()

    def stop(self) -> None:
        import shutil

        stop_group(self.proc, signal.SIGINT)
        self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (team stack); skips with the install hint where its binaries are absent."""
    if postgres_bin() is None:
        pytest.skip(PG_MISSING)
    server = PostgresServer().start()
    yield server
    server.stop()


# --- S3 ------------------------------------------------------------------------------------------------------------

S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "visionops-test-key",
    "AWS_SECRET_ACCESS_KEY": "visionops-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    """A real S3 API on 127.0.0.1 (moto's server, a separate process); buckets are made with boto3.

    The credentials are env-style test values: ``env()`` gives the variables a server or tool needs, so they are
    handed only to the processes that talk to S3 (never written into a config file).
    """

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.proc = root, free_port(), None
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> S3Server:
        cmd = [venv_tool("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = start_server(cmd, self.root / "moto.log", self.endpoint + "/moto-api/", "moto_server", timeout)
        return self

    def env(self, endpoint_variable: str | None = None) -> dict[str, str]:
        """The credentials as environment variables; plus the endpoint under ``endpoint_variable`` if named."""
        return {**S3_KEYS, **({endpoint_variable: self.endpoint} if endpoint_variable else {})}

    def client(self):
        """A boto3 S3 client of this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_KEYS["AWS_DEFAULT_REGION"],
        )

    def bucket(self, name: str) -> str:
        """Create bucket ``name``; returns the name."""
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3 API server (moto, a real process) for the session; tests create their own buckets."""
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_server_down(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 API whose endpoint is known but not answering yet: the test brings it up with ``start()``."""
    server = S3Server(tmp_path / "s3")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def team_mlflow(postgres_server: PostgresServer, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on a PostgreSQL database (``server.database``), proxying artifacts to the S3 bucket
    ``server.bucket``: only the server holds S3 settings."""
    # Session-wide servers, one store per module: a second module must not meet the first one's database or bucket.
    unique = secrets.token_hex(4)
    bucket, database = s3_server.bucket(f"team-mlflow-{unique}"), f"mlflow_team_{unique}"
    server = MlflowServer(
        tmp_path_factory.mktemp("team-mlflow"),
        artifacts_destination=f"s3://{bucket}/mlflow",
        backend_store_uri=postgres_server.new_database(database),
        env=s3_server.env("MLFLOW_S3_ENDPOINT_URL"),
    ).start()
    server.bucket, server.database = bucket, database
    yield server
    server.stop()


# --- The project's own servers: `visionops ui`, `mlflow models serve` ----------------------------------------------


class Started:
    """A server process started by a factory fixture: ``proc``, ``port``, ``url``, ``log``."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def visionops_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], Started]]:
    """A factory: ``visionops_ui(project)`` runs the `visionops ui` console script in ``project`` (a project root;
    made one if it is not) on a free port over the project's own store (no MLFLOW_TRACKING_URI), and returns once
    /health answers. Whatever still runs is stopped with its process group in teardown."""
    started: list[Started] = []

    def start(project: Path) -> Started:
        if not (project / "dvc.yaml").is_file():
            mark_project(project)
        port, log = free_port(), tmp_path_factory.mktemp("ui") / "ui.log"
        env = {"MLFLOW_TRACKING_URI": None}  # the project's own store: `ui` starts a server only then
        proc = spawn([venv_tool("visionops"), "ui", "--port", str(port)], log, env, cwd=project)
        started.append(Started(proc, port, log))
        wait_until_up(f"{started[-1].url}/health", proc, log, 120, "visionops ui")
        return started[-1]

    yield start
    for ui in started:
        stop_group(ui.proc)


@pytest.fixture
def serve_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], Started]]:
    """A factory: ``serve_model(model_uri, tracking_uri)`` runs `mlflow models serve` of the model (this
    environment, no conda) on a free port of 127.0.0.1, and returns once /ping answers; stopped in teardown."""
    started: list[Started] = []

    def start(model: str, tracking_uri: str) -> Started:
        port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
        cmd = [venv_tool("mlflow"), "models", "serve", "-m", model, "--env-manager", "local"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        url = f"http://127.0.0.1:{port}/ping"
        proc = start_server(cmd, log, url, "mlflow models serve", 180, {"MLFLOW_TRACKING_URI": tracking_uri})
        started.append(Started(proc, port, log))
        return started[-1]

    yield start
    for served in started:
        stop_group(served.proc)


# --- Prefect -------------------------------------------------------------------------------------------------------

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class PrefectClient:
    """The prefect CLI and REST API of a Prefect server at ``api`` (``http://host:port/api``) that runs elsewhere.

    ``env`` is every ``prefect`` command's environment (PREFECT_API_URL among it); its PREFECT_API_AUTH_STRING, when
    set, authenticates the REST requests too. Commands run in ``home`` unless told otherwise.
    """

    def __init__(self, api: str, env: dict[str, str], home: Path) -> None:
        self.api, self.env, self.home = api.rstrip("/"), env, home

    def cmd(
        self, *args: str, cwd: Path | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """The prefect CLI against this server; with ``check``, a non-zero exit fails the test with its output."""
        proc = subprocess.run(
            [venv_tool("prefect"), *args],
            env=self.env,
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert not check or proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def trigger(self, params: dict | None = None, deployment: str = "training-pipeline/local") -> str:
        """Run ``deployment`` with ``params``; returns the flow run's id."""
        out = self.cmd("deployment", "run", deployment, "--params", json.dumps(params or {})).stdout
        return next(line.split()[-1] for line in out.splitlines() if "UUID" in line)

    def request(self, path: str, body: dict | None = None) -> list | dict:
        """GET ``path`` of the API (relative, e.g. ``flow_runs/<id>``), or POST ``body``; the decoded answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api}/{path}", data=data, headers={"Content-Type": "application/json"})
        if self.env.get("PREFECT_API_AUTH_STRING"):
            token = base64.b64encode(self.env["PREFECT_API_AUTH_STRING"].encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def flow_run(self, flow_run_id: str) -> dict:
        """The flow run as the API returns it (state_type, infrastructure_pid, ...)."""
        return self.request(f"flow_runs/{flow_run_id}")

    def state(self, flow_run_id: str) -> str:
        return self.flow_run(flow_run_id)["state_type"]

    def wait(self, flow_run_id: str, timeout: float = 600) -> str:
        """The flow run's final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(flow_run_id)
            if state in FINAL:
                return state
            time.sleep(2)
        raise TimeoutError(f"flow run {flow_run_id} still {state} after {timeout} s")

    def logs(self, flow_run_id: str) -> str:
        """Every log line of the flow run, oldest first."""
        texts, offset = [], 0
        while True:
            body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"}
            page = self.request("logs/filter", body | {"offset": offset})
            texts += [entry["message"] for entry in page]
            if len(page) < 200:
                return "\n".join(texts)
            offset += 200


class PrefectStack(PrefectClient):
    """A real Prefect server on a free 127.0.0.1 port (PREFECT_HOME in a temp dir) and process workers.

    The server keeps its state in sqlite under PREFECT_HOME, or in the PostgreSQL database ``database_url``
    (``postgresql+asyncpg://...``), which only the server's environment holds. ``env`` goes to the commands and
    workers (e.g. the DVC remote's credentials).
    """

    def __init__(
        self, home: Path, mlflow_uri: str | None, database_url: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        api = f"http://127.0.0.1:{self.port}/api"
        client_env = tool_env(
            PREFECT_HOME=str(home),
            PREFECT_API_URL=api,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            MLFLOW_TRACKING_URI=mlflow_uri,
            PREFECT_LOGGING_LEVEL="INFO",
            **(env or {}),
        )
        super().__init__(api, client_env, home)
        self.server_env = dict(self.env)
        if database_url:
            self.server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
        self.procs = []
        self.worker_proc = self.origin = self.mlflow = self.tracking = self.team = None

    def start(self) -> PrefectStack:
        self.procs.insert(0, self._server())
        return self

    def _server(self) -> subprocess.Popen:
        cmd = [venv_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        log = self.home / "server.log"
        return start_server(cmd, log, f"{self.api}/health", "prefect server", 180, self.server_env, self.home)

    def restart_server(self, down_s: float = 0) -> None:
        """Stop the server (SIGTERM to its process group, as a supervisor or `docker restart` does) and start it
        again on the same port and database after ``down_s`` seconds; workers and their flow runs keep running."""
        stop_group(self.procs.pop(0), timeout=60)
        time.sleep(down_s)
        self.procs.insert(0, self._server())

    def start_worker(self) -> subprocess.Popen:
        """A process worker of the pool prefect.yaml's `local` deployment uses (``worker_proc``)."""
        cmd = [venv_tool("prefect"), "worker", "start", "--pool", "visionops-process"]
        self.worker_proc = spawn(cmd, self.home / "worker.log", self.env, self.home)
        self.procs.append(self.worker_proc)
        return self.worker_proc

    def kill_worker(self) -> None:
        """SIGKILL the worker's process group: the worker and the flow run's process with it."""
        stop_group(self.worker_proc, signal.SIGKILL)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_group(proc, timeout=60)


PREFECT_AUTH_STRING = "visionops:test-only-prefect-password"  # a throwaway server's credentials, never real ones


@pytest.fixture(scope="module")
def auth_prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    """A Prefect server that requires basic auth, as compose.yaml runs it: the server gets
    PREFECT_SERVER_API_AUTH_STRING (``server.auth_string``); ``server.env`` is a client's environment *without*
    PREFECT_API_AUTH_STRING (add it to be let in)."""
    stack = PrefectStack(tmp_path_factory.mktemp("prefect-auth"), None)
    stack.server_env["PREFECT_SERVER_API_AUTH_STRING"] = PREFECT_AUTH_STRING
    stack.auth_string = PREFECT_AUTH_STRING
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def prefect_pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Tracking server, Prefect server, the tiny origin repository deployed from its prefect.yaml, one worker.

    Where PostgreSQL is installed this is the team stack: Prefect and MLflow keep their state in PostgreSQL,
    MLflow's artifacts and the DVC remote live in S3 (``team``: postgres, s3, bucket). Otherwise the laptop's
    sqlite files and a local remote (``team`` is None). Only configuration differs between the two.
    """
    from mlflow import MlflowClient

    base = tmp_path_factory.mktemp("prefect")
    team = None
    if postgres_bin():
        pg, s3 = request.getfixturevalue("postgres_server"), request.getfixturevalue("s3_server")
        team = {"postgres": pg, "s3": s3, "bucket": s3.bucket("pipeline")}
        tracking = MlflowServer(
            base / "mlflow",
            backend_store_uri=pg.new_database("mlflow_pipeline"),
            artifacts_destination=f"s3://{team['bucket']}/mlflow",
            env=s3.env("MLFLOW_S3_ENDPOINT_URL"),
        )
        stack = PrefectStack(base, tracking.uri, pg.new_database("prefect", "postgresql+asyncpg"), s3.env())
    else:
        tracking = MlflowServer(base / "mlflow")
        stack = PrefectStack(base, tracking.uri)
    try:
        tracking.start()
        stack.start()
        if team:
            s3 = team["s3"]
            origin = tiny_origin(base / "origin", f"s3://{team['bucket']}/dvc", s3.endpoint, **s3.env())
        else:
            origin = tiny_origin(base / "origin", str(base / "dvc-remote"))
        stack.cmd("variable", "set", "visionops_repo", str(origin))
        stack.cmd("variable", "set", "visionops_branch", "main")
        stack.cmd("work-pool", "create", "visionops-process", "--type", "process")
        stack.cmd("--no-prompt", "deploy", "--name", "training-pipeline/local", cwd=origin)
        stack.start_worker()
        stack.origin, stack.mlflow, stack.tracking, stack.team = origin, MlflowClient(tracking.uri), tracking, team
        yield stack
    finally:
        stack.stop()
        tracking.stop()


# --- A new user's clone and shell (the README's journeys) ----------------------------------------------------------

PROJECT_VARIABLES = ("MLFLOW_", "PREFECT_", "DVC_", "VISIONOPS_", "VIRTUAL_ENV", "PYTHONPATH", "PYTEST_", "GIT_", "UV_")


class User:
    """A fresh clone of ``origin`` (a repository like this checkout: :func:`helpers.tiny_origin`) and a plain shell
    to type the README's commands into.

    Nothing is injected: no venv on PATH, no MLflow, Prefect or DVC setting. The user has a home folder of its own
    (so the default DVC remote under ``~`` is the test's) and keeps the machine's login environment (certificates,
    package mirrors) and download cache (XDG_CACHE_HOME); the stack's two ports are free ones, through the
    variables the README documents.
    """

    def __init__(self, base: Path, origin: Path) -> None:
        self.home, self.clone = base / "home", base / "clone"
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
        self.shell(shlex.join(["git", "clone", "-q", str(origin), str(self.clone)]), cwd=base)

    def shell(self, line: str, cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
        """Run one command line in bash as the user would type it; fail with its output if it fails."""
        done = subprocess.run(
            ["bash", "-c", line], cwd=cwd or self.clone, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"$ {line}\nexit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
        return done

    def url(self, server: str) -> str:
        """The stack's ``mlflow`` or ``prefect`` UI."""
        return f"http://127.0.0.1:{self.env[f'VISIONOPS_{server.upper()}_PORT']}"


@pytest.fixture(scope="module")
def tiny_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    """A new user with a fresh clone of this checkout whose sample is a tiny generated dataset (36 images of 48 px,
    1+1 epochs at 32 px), kept as the real one is (the in-repo DVC remote, .dvc/config as committed): the README's
    journeys, which train many times. Whatever they started is stopped with the README's `./run.sh down`."""
    base = tmp_path_factory.mktemp("journey")
    walker = User(base, tiny_origin(base / "origin"))
    yield walker
    walker.shell("./run.sh down", timeout=180)
