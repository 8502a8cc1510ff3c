"""Long-running commands stop with all their children, and the stack refuses a taken port with the fix.

The whole stack (up, deploy, two runs, status, down) is walked from the README in tests/e2e/test_journey.py.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from helpers import cli, free_port, mark_project, processes, run

from visionops.processes import alive, group_members

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_stops_with_all_its_processes_on_a_signal_to_its_own_pid(
    tmp_path: Path, visionops_ui, sig: signal.Signals
) -> None:
    """A supervisor, `docker stop` or Ctrl-C signal `visionops ui` alone; MLflow's uvicorn and huey must go too."""
    ui = visionops_ui(tmp_path).proc
    time.sleep(3)  # MLflow starts its job runner and huey consumers after the server answers
    tree = group_members(ui.pid) + _children_groups(ui.pid)
    assert len(tree) > 3, "the UI runs mlflow with uvicorn and huey children"
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
    from visionops.stack import _port_free

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
