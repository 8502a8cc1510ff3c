"""Processes the project starts and must stop: a server in the foreground, its whole process group, from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def run_foreground(command: list[str], env: dict[str, str] | None = None, grace_s: float = 20) -> int:
    """Run a server in its own process group until it exits, or until SIGINT/SIGTERM stops it and all its children.

    The group matters: ``mlflow server`` leaves its uvicorn child (and job consumers, when they run) behind when
    only its own pid is signalled. They get SIGTERM, then SIGKILL after ``grace_s``. ``env`` is added to this
    process's environment.

    Returns:
        The server's exit code, or 128 + the signal that stopped it.
    """
    proc = subprocess.Popen(command, start_new_session=True, env={**os.environ, **(env or {})})
    received: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
        if received:
            wait_group_gone(proc.pid, grace_s)
            return 128 + received[0]
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_group_gone(pgid: int, grace_s: float) -> None:
    """Wait until no process of group ``pgid`` is left; SIGKILL the rest after ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while group_members(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.2)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by a container's init, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
