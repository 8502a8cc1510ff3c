"""Long-running commands stop with all their children, and the stack refuses a taken port with the fix.

The whole stack (up, deploy, two runs, status, down) is walked from the README in tests/e2e/test_journey.py.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli, free_port, run, tool_env, wait_until_up

from visionops.processes import alive, group_members

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _project(tmp_path: Path) -> Path:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
    return tmp_path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_stops_with_all_its_processes_on_a_signal_to_its_own_pid(tmp_path: Path, sig: signal.Signals) -> None:
    """A supervisor, `docker stop` or Ctrl-C signal `visionops ui` alone; MLflow's uvicorn and huey must go too."""
    port = free_port()
    env = {k: v for k, v in tool_env().items() if k != "MLFLOW_TRACKING_URI"}
    ui = subprocess.Popen(
        cli("ui", "--port", str(port)),
        cwd=_project(tmp_path),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", ui, tmp_path / "none.log", 120, "visionops ui")
        time.sleep(3)  # MLflow starts its job runner and huey consumers after the server answers
        tree = group_members(ui.pid) + _children_groups(ui.pid)
        assert len(tree) > 3, "the UI runs mlflow with uvicorn and huey children"
        ui.send_signal(sig)
        assert ui.wait(timeout=60) == 128 + sig
        assert [pid for pid in tree if alive(pid)] == [], "every process of the UI stopped"
    finally:
        if ui.poll() is None:
            ui.kill()


def _children_groups(pid: int) -> list[int]:
    """Processes in the process groups led by ``pid``'s children (the server runs in a group of its own)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found += group_members(int(stat.parent.name))
    return found


def test_up_refuses_a_taken_port_and_names_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(
            cli("stack", "up", "--mlflow-port", str(port), "--prefect-port", str(free_port())),
            cwd=_project(tmp_path),
            check=False,
        )
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr and "--mlflow-port" in done.stderr, done.stderr
    assert not (tmp_path / ".stack" / "supervisord.pid").exists(), "nothing was started"
