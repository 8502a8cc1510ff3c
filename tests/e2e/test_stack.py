"""Long-running commands stop with all their children, and the stack refuses a taken port with the fix.

The whole stack (up, deploy, two runs, status, down) is walked from the README in tests/e2e/test_journey.py; here
`visionops stack up` (what `./run.sh up` runs) is stopped by `down` and by a SIGTERM to supervisord, and every process
it had started must be gone within seconds, with no pid file or socket left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from helpers import cli, free_port, mark_project, processes, run

from visionops.processes import alive, group_members
from visionops.stack.supervisor import load

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.faults
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_stops_with_all_its_processes_on_a_signal_to_its_own_pid(
    tmp_path: Path, visionops_ui, sig: signal.Signals
) -> None:
    """A supervisor, `docker stop` or Ctrl-C signal `visionops ui` alone; MLflow's uvicorn must go too."""
    ui = visionops_ui(tmp_path).proc
    time.sleep(3)  # (MLflow would start a job runner after the server answers: none must come)
    tree = group_members(ui.pid) + _children_groups(ui.pid)
    commands = " ".join(cmd for pid, _, cmd in processes() if pid in tree)
    assert len(tree) >= 3 and "uvicorn" in commands, f"visionops ui, mlflow server and its uvicorn: {commands}"
    assert "huey" not in commands and "_job_runner" not in commands, "MLflow's job execution is off"
    ui.send_signal(sig)
    assert ui.wait(timeout=60) == 128 + sig
    assert [pid for pid in tree if alive(pid)] == [], "every process of the UI stopped"


def _children_groups(pid: int) -> list[int]:
    """Processes in the process groups led by ``pid``'s children (the server runs in a group of its own)."""
    return [member for child, fields, _ in processes() if int(fields[1]) == pid for member in group_members(child)]


def test_up_refuses_a_taken_port_and_names_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(
            cli("stack", "up", "--mlflow-port", str(port), "--prefect-port", str(free_port())),
            cwd=mark_project(tmp_path),
            check=False,
        )
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr and "--mlflow-port" in done.stderr, done.stderr
    assert not (tmp_path / ".stack" / "supervisord.pid").exists(), "nothing was started"


def test_a_port_a_stopped_server_closed_connections_on_is_free() -> None:
    """`down` then `up` at once: the servers' closed connections wait in TIME_WAIT for a minute, which is no reason to
    refuse their port (the README's sweep restarts the journey's stack with two workers)."""
    from visionops.stack.supervisor import _port_free

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn (MLflow's, Prefect's) does
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            served, _ = listener.accept()
            served.close()  # the server closes first, as an HTTP server does: its side waits in TIME_WAIT
            client.recv(1)
        assert not _port_free(port), "a listening port is taken"
    assert _port_free(port)


def _stack_tree(supervisord: int) -> set[int]:
    """supervisord and every process it started: its session (a daemon's; its programs keep it unless they start one
    of their own), the process groups of its programs (what `stopasgroup` signals), and all their descendants."""
    table = {pid: fields for pid, fields, _ in processes() if fields[0] != "Z"}
    tree = {supervisord}
    while True:  # (a flow run's process starts a session of its own under its worker: follow it too)
        sessions, groups = {table[p][3] for p in tree if p in table}, {table[p][2] for p in tree if p in table}
        found = {p for p, f in table.items() if int(f[1]) in tree or f[3] in sessions or f[2] in groups} - tree
        if not found:
            return tree
        tree |= found


def _gone_within(pids: set[int], seconds: float) -> list[str]:
    """The processes of ``pids`` still alive after ``seconds`` (their command lines); [] as soon as all are gone."""
    deadline = time.monotonic() + seconds
    while [pid for pid in pids if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    commands = {pid: cmd for pid, _, cmd in processes()}
    return [f"{pid}: {commands.get(pid, '?')[:200]}" for pid in pids if alive(pid)]


SLEEPER = """
import time
from prefect import flow

@flow
def sleeper():
    time.sleep(900)
"""
# Waits for the pool the stack's workers create, deploys the flow from this folder on it, and queues one run.
DEPLOY = """
import asyncio, sys
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

async def pool():
    async with get_client() as client:
        for _ in range(120):
            try:
                return await client.read_work_pool("visionops-process")
            except Exception:
                await asyncio.sleep(1)

asyncio.run(pool())
flow.from_source(source=sys.argv[1], entrypoint="sleeper.py:sleeper").deploy(
    name="sleep", work_pool_name="visionops-process", print_next_steps=False
)
run_deployment("sleeper/sleep", timeout=0)
"""


def _up(project: Path) -> tuple[int, set[int]]:
    """`visionops stack up` on free ports with two workers, one of them running a flow run (a long sleep);
    supervisord's pid and the processes it runs, once MLflow's uvicorn and the flow run's process are up."""
    ports = ["--mlflow-port", str(free_port()), "--prefect-port", str(free_port()), "--workers", "2"]
    up = json.loads(run(cli("stack", "up", "--json", *ports), cwd=project, timeout=300).stdout)
    assert up["healthy"] == {"mlflow": True, "prefect": True}, up
    pid = int((project / ".stack/supervisord.pid").read_text())
    (project / "sleeper.py").write_text(SLEEPER)
    (project / "deploy_sleeper.py").write_text(DEPLOY)
    run(cli("stack", "exec", sys.executable, "deploy_sleeper.py", str(project)), cwd=project, timeout=300)
    tree: set[int] = set()
    deadline, settled = time.monotonic() + 300, 0
    while settled < 3 and time.monotonic() < deadline:
        tree |= _stack_tree(pid)
        commands = " ".join(cmd for p, _, cmd in processes() if p in tree)
        flow_run = "prefect.engine" in commands or "_workspace_supervisor" in commands
        settled += "uvicorn" in commands and commands.count("worker start") == 3 and flow_run  # then a few more looks
        time.sleep(1)
    assert settled, f"the stack did not settle with a flow run in progress: {commands}"
    return pid, tree


@pytest.mark.faults
@pytest.mark.parametrize("stop", ["down", "sigterm"])
def test_stack_stops_every_process_and_leaves_no_stale_file(tmp_path: Path, stop: str) -> None:
    """`visionops stack down` (`./run.sh down`), or SIGTERM to supervisord as a shutdown or `kill` sends it: every
    process of the stack (MLflow with uvicorn and huey, the Prefect server, both workers, the control worker, and the
    flow run one worker is running, in a session of its own) is gone within seconds, and neither the pid file nor
    the control socket is left to confuse the next `up`."""
    project = mark_project(tmp_path / "project")
    pid, tree = _up(project)
    commands = " ".join(cmd for p, _, cmd in processes() if p in tree)
    assert len(tree) >= 8 and "uvicorn" in commands and commands.count("worker start") == 3, commands
    assert "huey" not in commands, "MLflow's job execution is off (stack.mlflow_server_env)"
    start = time.monotonic()
    if stop == "down":
        assert "stack stopped" in run(cli("stack", "down"), cwd=project, timeout=180).stdout
    else:
        os.kill(pid, signal.SIGTERM)
    returned = time.monotonic() - start
    assert _gone_within(tree, 60 if stop == "sigterm" else 5) == [], f"{stop} left processes running"
    print(
        f"\n{stop}: {len(tree)} processes; returned after {returned:.1f} s, all gone {time.monotonic() - start:.1f} s"
    )
    assert not (project / ".stack/supervisord.pid").exists(), "stale pid file"
    assert not load(project).socket.exists(), "stale control socket"
    status = run(cli("stack", "status"), cwd=project, check=False)
    assert status.returncode == 3 and "not running" in status.stdout, status.stdout + status.stderr
