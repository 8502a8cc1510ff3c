"""Helpers shared by the tests: subprocess environment, free ports, a real MLflow server, tiny train params."""

from __future__ import annotations

from pathlib import Path

from visionops.config import TrainParams

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # image side of model tests: tiny, so B0 trains in seconds on CPU


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this venv's tools first on PATH, git identity, offline switches."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="tests",
        GIT_AUTHOR_EMAIL="tests@localhost",
        GIT_COMMITTER_NAME="tests",
        GIT_COMMITTER_EMAIL="tests@localhost",
        DVC_NO_ANALYTICS="1",
        NO_ALBUMENTATIONS_UPDATE="1",
        GX_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600, **env: str):
    """Run a command as a user would, capturing output; on failure show it in the assertion."""
    import subprocess

    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(**env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, proc, log: Path, timeout: float, what: str) -> None:
    """Poll ``url`` until any HTTP answer comes back (an error status still means the server listens).

    Raises:
        RuntimeError: the process exited or did not answer within ``timeout`` s; the message ends with its log.
    """
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} not answering {url} after {timeout} s: {log.read_text(errors='replace')[-3000:]}")


def start_server(cmd: list[str], log: Path, url: str, what: str, timeout: float, env: dict[str, str] | None = None):
    """Start a server in its own process group, output to ``log``, and wait until ``url`` answers.

    Raises:
        RuntimeError: it exited or did not answer within ``timeout`` s (it is stopped first); ends with its log.
    """
    import subprocess

    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 - kept open for the process's lifetime
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env=tool_env(**(env or {})), start_new_session=True
    )
    try:
        wait_until_up(url, proc, log, timeout, what)
    except RuntimeError:
        stop_group(proc)
        raise
    return proc


def stop_group(proc, sig: int | None = None, timeout: float = 30) -> None:
    """Stop a process started with ``start_new_session`` and everything it spawned; SIGKILL if it lingers."""
    import os
    import signal
    import subprocess

    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, sig or signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class MlflowServer:
    """A real `mlflow server` process on 127.0.0.1, started and stopped by PID.

    By default the laptop setup: a sqlite backend and local artifacts under ``root``. The team setup is the same
    server with ``backend_store_uri`` (e.g. ``postgresql://...``) and ``artifacts_destination``
    (``s3://bucket/prefix``): artifacts are then proxied through the server, so only the server's ``env`` holds
    the S3 endpoint and credentials and clients need nothing but MLFLOW_TRACKING_URI.
    """

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root, self.port = root, port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.artifacts_destination, self.env = artifacts_destination, env or {}
        self.proc = None

    def command(self) -> list[str]:
        """The `mlflow server` command line for this store and artifact location."""
        import sys

        cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            self.backend_store_uri,
        ]
        if self.artifacts_destination:
            return [*cmd, "--serve-artifacts", "--artifacts-destination", self.artifacts_destination]
        return [*cmd, "--default-artifact-root", (self.root / "artifacts").as_uri()]

    def start(self, timeout: float = 120) -> MlflowServer:
        self.proc = start_server(
            self.command(), self.root / "server.log", self.uri + "/health", "mlflow server", timeout, self.env
        )
        return self

    def stop(self) -> None:
        stop_group(self.proc)  # the server and its uvicorn workers
        self.proc = None


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

    def __init__(self, port: int | None = None) -> None:
        self.port, self.proc, self.root = port or free_port(), None, None
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError(PG_MISSING)

    def _as_owner(self) -> dict:
        """Popen arguments that drop root to ``nobody``; nothing when not root."""
        import os
        import pwd

        if os.geteuid() != 0:
            return {}
        user = pwd.getpwnam("nobody")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _init(self) -> None:
        import os
        import subprocess
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="visionops-pg-"))
        (self.root / "pwfile").write_text(PG_PASSWORD + "\n")
        owner = self._as_owner()
        if owner:
            for path in (self.root, self.root / "pwfile"):
                os.chown(path, owner["user"], owner["group"])
        cmd = [
            str(self.bin / "initdb"),
            "-D",
            str(self.root / "data"),
            "-U",
            "postgres",
            "--pwfile",
            str(self.root / "pwfile"),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-locale",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]
        done = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=120, **owner)
        if done.returncode != 0:
            raise RuntimeError(f"initdb exited {done.returncode}: {done.stdout}{done.stderr}")

    def start(self, timeout: float = 60) -> PostgresServer:
        import subprocess
        import time

        import psycopg2

        self._init()
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - kept open for the process's lifetime
        # fsync off: a test database is thrown away, durability only costs time here.
        cmd = [
            str(self.bin / "postgres"),
            "-D",
            str(self.root / "data"),
            "-p",
            str(self.port),
            "-k",
            str(self.root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ]
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
        return f"{driver}://postgres:{PG_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str, driver: str = "postgresql+psycopg2") -> str:
        """Create database ``name`` (each server gets its own, as in the team stack); returns its URL."""
        self.query("postgres", f'CREATE DATABASE "{name}"', fetch=False)
        return self.url(name, driver)

    def query(self, database: str, sql: str, args: tuple = (), fetch: bool = True) -> list[tuple]:
        """Run one statement over TCP with the password, as the servers do; the rows it returns."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=PG_PASSWORD, dbname=database, connect_timeout=5
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
        import signal

        stop_group(self.proc, signal.SIGINT)
        self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


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

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port, self.proc = root, port or free_port(), None
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> S3Server:
        import sys

        cmd = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]
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


def tiny_params(**overrides) -> TrainParams:
    """TrainParams for 32-px B0 runs in tests."""
    base = {
        "image_size": SIZE,
        "weights": None,
        "batch_size": 8,
        "workers": 1,
        "head": {"epochs": 1},
        "finetune": {"epochs": 1},
    }
    return TrainParams.model_validate({**base, **overrides})


def tiny_project(
    root: Path,
    params_yaml: str,
    classes: tuple[str, ...] = ("ant", "bee", "cow"),
    per_class: int = 8,
    split_seed: int = 1,
) -> Path:
    """A tiny project: params.yaml, and the validate/split outputs of ``classes`` × ``per_class`` images."""
    from corpus import good_class

    from visionops.config import SplitParams, ValidateParams
    from visionops.split import split
    from visionops.validate import validate

    for label in classes:
        good_class(root / "data", label, per_class)
    validate(root / "data", ValidateParams(min_images_per_class=3), root / "artifacts" / "validate")
    split(
        root / "artifacts/validate/manifest.csv",
        SplitParams(test_ratio=0.25, seed=split_seed),
        root / "artifacts/split",
    )
    (root / "params.yaml").write_text(params_yaml)
    (root / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
    return root


TINY_PIPELINE = {
    "validate": {"min_images_per_class": 3},
    "train": {"image_size": 32, "batch_size": 16, "workers": 1, "head": {"epochs": 1}, "finetune": {"epochs": 1}},
    "promote": {"min_metric": None},
}


def merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into ``base`` key by key, nested dicts included (``base`` is changed and returned)."""
    for key, value in extra.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def tiny_origin(dest: Path, remote: str, endpoint: str | None = None, **env: str) -> Path:
    """A git repository like this checkout with a tiny generated dataset, pushed to the DVC remote ``remote``.

    A local folder becomes the default remote ``sample`` (the laptop setup); with ``endpoint`` (an S3 URL and its
    server) it is the team setup, made the way a user makes it: ``dvc remote add -d team`` and ``dvc remote
    modify team endpointurl``; the credentials come from ``env`` (AWS_*), never from .dvc/config.
    """
    import yaml

    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file() and not rel.startswith("dvc-remote/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((REPO / rel).read_bytes())
    (dest / "run.sh").chmod(0o755)
    params = merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY_PIPELINE)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "data.dvc").unlink()
    run(cli("sample-data", "--out", "data", "--per-class", "12", "--size", "48"), cwd=dest)
    run(["git", "init", "-q", "-b", "main"], cwd=dest)
    remote_cmds = [["dvc", "remote", "add", "-f", "-d", "sample", remote]]
    if endpoint:
        remote_cmds = [
            ["dvc", "remote", "add", "-d", "team", remote],
            ["dvc", "remote", "modify", "team", "endpointurl", endpoint],
        ]
    for cmd in (
        *remote_cmds,
        ["dvc", "add", "-q", "data"],
        ["dvc", "push", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "tiny origin"],
    ):
        run(cmd, cwd=dest, **env)
    return dest


def cli(*args: str) -> list[str]:
    """The visionops command line, run with this interpreter."""
    import sys

    return [sys.executable, "-m", "visionops.cli", *args]
