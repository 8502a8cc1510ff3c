"""The local stack: the MLflow UI over the project's own store, a Prefect server and process workers, on 127.0.0.1.

supervisord runs the three programs as one daemon: ``up`` writes its config and starts it, ``status`` asks it over
its Unix socket, ``down`` asks it to stop every program (each with its whole process group, so MLflow's uvicorn
child goes too) and waits until it has exited. Everything lives in ``<checkout>/.stack/`` (git-ignored): the
supervisord config, socket and pid file, the Prefect server's database (``prefect/``) and every log (``logs/``).

The workers' environment points at the stack's MLflow server, so a deployment run, which a worker executes in a
temporary clone of the repository, logs its runs and model versions into the checkout's own store: the one the
MLflow UI shows. Ports: ``--mlflow-port`` or ``VISIONOPS_MLFLOW_PORT`` (5000), ``--prefect-port`` or
``VISIONOPS_PREFECT_PORT`` (4200); ``up`` keeps them in ``.stack/stack.json`` for the commands that follow."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import xmlrpc.client
from dataclasses import asdict, dataclass
from pathlib import Path

from visionops.errors import ServiceUnavailable, UserError
from visionops.files import project_store, store_root, write_json
from visionops.processes import alive

POOL = "visionops-process"  # trainings: one flow run per worker at a time
CONTROL_POOL = "visionops-control"  # sweeps: they only queue and wait for trainings, so they never take a POOL slot
HOST = "127.0.0.1"  # every server of the stack binds loopback only


class StackError(UserError):
    """The stack cannot start (a port is taken, a server does not come up); the message says what to do."""


class StackNotRunning(ServiceUnavailable):
    """A command needs the local stack and it is not running."""


@dataclass(frozen=True)
class Stack:
    """Where one checkout's stack lives and listens."""

    root: Path
    mlflow_port: int = 5000
    prefect_port: int = 4200
    workers: int = 1

    @property
    def home(self) -> Path:
        """``<checkout>/.stack``: config, socket, pid file, Prefect's database, logs."""
        return self.root / ".stack"

    @property
    def logs(self) -> Path:
        """The one folder holding every log of the stack."""
        return self.home / "logs"

    @property
    def mlflow_url(self) -> str:
        """The MLflow UI and tracking server."""
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def prefect_url(self) -> str:
        """The Prefect UI; its API is under ``/api``."""
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def socket(self) -> Path:
        """supervisord's control socket (a short path under the temp folder when the checkout's is too long)."""
        path = self.home / "supervisor.sock"
        if len(str(path)) < 100:  # (AF_UNIX paths are limited to 107 bytes)
            return path
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"visionops-stack-{digest}.sock"

    def env(self) -> dict[str, str]:
        """What a Prefect command or worker needs to talk to this stack, and a flow run to log to its MLflow."""
        return {
            "PREFECT_API_URL": f"{self.prefect_url}/api",
            "PREFECT_HOME": str(self.home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_TRACKING_URI": self.mlflow_url,
        }


def load(root: Path | None = None) -> Stack:
    """The stack of this checkout as ``up`` configured it (its ports); defaults when it never ran.

    Raises:
        StackError: ``.stack/stack.json`` is not readable JSON.
    """
    root = store_root(root)
    saved = root / ".stack" / "stack.json"
    if not saved.is_file():
        return Stack(root)
    try:
        values = json.loads(saved.read_text())
        return Stack(root, int(values["mlflow_port"]), int(values["prefect_port"]), int(values["workers"]))
    except (ValueError, KeyError) as err:
        raise StackError(f"{saved} is damaged ({err}): stop the stack's processes and remove the file.") from None


def mlflow_server_env() -> dict[str, str]:
    """What the project's ``mlflow server`` runs with (the stack's and ``visionops ui``'s): job execution off.

    MLflow 3 servers start a job runner with eight huey consumer processes for its GenAI jobs (trace scoring,
    prompt optimisation), which an image classifier never submits. Measured here: 10 processes and 2.4 GiB RSS with
    them, 2 and 0.5 GiB without; /health answered 6 s sooner, and SIGTERM to the group took 8.9 s instead of 1.9
    (the consumers are what made ``down`` slow). Export ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true`` to have them.
    """
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}


def ui_command(host: str, port: int, root: Path | None = None) -> list[str]:
    """The ``mlflow server`` command serving the project's own store, as ``visionops ui`` and the stack run it.

    Artifacts stay where every local client writes them (``<checkout>/mlartifacts``, not proxied), so runs logged
    straight into mlflow.db and runs logged through this server look the same. One worker: a laptop UI.
    """
    mlflow = Path(sys.executable).parent / "mlflow"  # this environment's, whatever PATH says
    artifacts = (store_root(root) / "mlartifacts").as_uri()
    options = {
        "--backend-store-uri": project_store(root),
        "--default-artifact-root": artifacts,
        "--host": host,
        "--port": str(port),
        "--workers": "1",
    }
    return [str(mlflow), "server", *_flat(options)]


def _flat(options: dict[str, str]) -> list[str]:
    """``{"--port": "5000"}`` → ``["--port", "5000"]``."""
    return [part for pair in options.items() for part in pair]


def _rpc(stack: Stack):
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{stack.socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def running(stack: Stack) -> bool:
    """Whether this checkout's supervisord answers on its socket."""
    if not stack.socket.exists():
        return False
    try:
        return _rpc(stack).getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Error):
        return False


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now: nothing listens there (connections a stopped server left in
    TIME_WAIT, for a minute after `down`, do not count: the servers set SO_REUSEADDR too)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def _program(name: str, command: list[str], stack: Stack, env: dict[str, str], **extra: str) -> str:
    """One ``[program:...]`` section: its own log, the whole process group stopped, restarted if it dies."""
    environment = ",".join(f'{k}="{v}"' for k, v in env.items())
    settings = {
        "command": shlex.join(command),
        "environment": environment,
        "directory": str(stack.root),
        "stdout_logfile": str(stack.logs / f"{extra.pop('log', name)}.log"),
        "redirect_stderr": "true",
        "stopasgroup": "true",  # SIGTERM to the process group: MLflow's uvicorn child, Prefect's too
        "killasgroup": "true",
        "stopwaitsecs": "20",
        "autorestart": "true",
        "startsecs": "3",
        **extra,
    }
    lines = [f"[program:{name}]", *(f"{k} = {v.replace('%', '%%')}" for k, v in settings.items())]
    return "\n".join(lines)


def config(stack: Stack) -> str:
    """supervisord.conf of the stack (written by ``up``; regenerated every time, so it follows the code)."""
    venv_bin = Path(sys.executable).parent
    env = {"PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", **stack.env()}
    options = {"--pool": POOL, "--type": "process", "--limit": "1", "--name": "local-%(process_num)d"}
    worker = [str(venv_bin / "prefect"), "worker", "start", *_flat(options)]
    control = [
        str(venv_bin / "prefect"),
        "worker",
        "start",
        *_flat({"--pool": CONTROL_POOL, "--type": "process", "--limit": "4", "--name": "control"}),
    ]
    sections = [
        "[unix_http_server]",
        f"file = {stack.socket}",
        "chmod = 0700",
        "[supervisord]",
        f"logfile = {stack.logs / 'supervisord.log'}",
        f"pidfile = {stack.home / 'supervisord.pid'}",
        f"childlogdir = {stack.logs}",
        f"directory = {stack.root}",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        _program(
            "mlflow", ui_command(HOST, stack.mlflow_port, stack.root), stack, env | mlflow_server_env(), priority="10"
        ),
        _program(
            "prefect-server",
            [str(venv_bin / "prefect"), "server", "start", "--host", HOST, "--port", str(stack.prefect_port)],
            stack,
            env,
            priority="20",
        ),
        # One flow run at a time per worker (a training takes every core); `up --workers N` runs N at once.
        # Started once the Prefect server answers (a worker started earlier would exit and be restarted).
        _program(
            "worker",
            worker,
            stack,
            env,
            process_name="worker-%(process_num)d",
            numprocs=str(stack.workers),
            autostart="false",
            log="worker-%(process_num)d",
            priority="30",
        ),
        _program("control-worker", control, stack, env, autostart="false", priority="30"),
    ]
    text = "\n".join(sections) + "\n"
    # (the worker's name and log use supervisor's %(process_num)d: undo the escaping _program applied to them)
    return text.replace("%%(process_num)d", "%(process_num)d")


def _wait(what: str, url: str, stack: Stack, log: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if time.monotonic() > deadline:
            tail = (stack.logs / log).read_text(errors="replace")[-2000:] if (stack.logs / log).is_file() else ""
            down(stack)
            raise StackError(f"{what} did not answer {url} within {timeout:.0f} s; {stack.logs / log} ends:\n{tail}")
        time.sleep(0.5)


def up(stack: Stack) -> Stack:
    """Start the stack, or leave it running (it is idempotent), and wait until every server answers.

    Raises:
        StackError: a port is taken by something else, or a server does not come up (its log's tail is shown).
    """
    if running(stack):
        return load(stack.root)
    for port, option in ((stack.mlflow_port, "--mlflow-port"), (stack.prefect_port, "--prefect-port")):
        if not _port_free(port):
            raise StackError(
                f"port {port} on {HOST} is in use (another MLflow UI, Prefect server or stack?). Stop that "
                f"program, or choose another port: ./run.sh up {option} PORT"
            )
    stack.logs.mkdir(parents=True, exist_ok=True)
    (stack.home / "prefect").mkdir(exist_ok=True)
    conf = stack.home / "supervisord.conf"
    conf.write_text(config(stack))
    write_json(stack.home / "stack.json", {k: v for k, v in asdict(stack).items() if k != "root"})
    supervisord = Path(sys.executable).parent / "supervisord"
    subprocess.run([str(supervisord), "-c", str(conf)], check=True, cwd=stack.root)  # returns once daemonised
    _wait("the MLflow server", f"{stack.mlflow_url}/health", stack, "mlflow.log")
    _wait("the Prefect server", f"{stack.prefect_url}/api/health", stack, "prefect-server.log")
    _rpc(stack).startProcessGroup("worker", True)
    _rpc(stack).startProcess("control-worker", True)
    return stack


def status(stack: Stack) -> list[dict[str, str]]:
    """One row per program: name, state, pid, uptime (empty when the stack is down)."""
    if not running(stack):
        return []
    rows = []
    for info in _rpc(stack).getAllProcessInfo():
        rows.append(
            {
                "program": info["name"],
                "state": info["statename"],
                "pid": str(info["pid"] or ""),
                "since": info["description"],
            }
        )
    return rows


def healthy(stack: Stack) -> dict[str, bool]:
    """Whether the MLflow and Prefect servers answer their health endpoints."""
    return {"mlflow": _answers(f"{stack.mlflow_url}/health"), "prefect": _answers(f"{stack.prefect_url}/api/health")}


def down(stack: Stack, timeout: float = 90) -> bool:
    """Stop every program (whole process groups) and supervisord itself; False when nothing was running.

    Raises:
        StackError: supervisord has not exited within ``timeout`` s.
    """
    pidfile = stack.home / "supervisord.pid"
    if not running(stack):
        return False
    pid = int(pidfile.read_text()) if pidfile.is_file() else None
    _rpc(stack).shutdown()
    deadline = time.monotonic() + timeout
    while pid is not None and alive(pid):
        if time.monotonic() > deadline:
            raise StackError(f"supervisord (pid {pid}) is still stopping after {timeout:.0f} s: see {stack.logs}")
        time.sleep(0.2)
    with contextlib.suppress(FileNotFoundError):
        stack.socket.unlink()
    return True
