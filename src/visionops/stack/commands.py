"""Commands against the local stack: any program with its environment, the Prefect CLI, deploying prefect.yaml."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from visionops.stack.supervisor import (
    CONTROL_POOL,
    POOL,
    Stack,
    StackError,
    StackNotRunning,
    running,
)


def execute(stack: Stack, command: list[str], check: bool = True, *, quiet: bool = False) -> int:
    """Run ``command`` with the stack's environment (its Prefect API and home, its MLflow server); its exit code.

    ``./run.sh prefect ...`` and ``./run.sh sweep ...`` run this way, so they reach the stack with nothing exported.

    Args:
        stack: the running stack.
        command: the command line.
        check: raise when it fails.
        quiet: keep its output off the terminal (for probes such as ``work-pool inspect``).

    Raises:
        StackNotRunning: the stack is not running.
        StackError: the command failed with ``check``.
    """
    if not running(stack):
        raise StackNotRunning("the local stack is not running: start it with ./run.sh up")
    done = subprocess.run(command, env={**os.environ, **stack.env()}, cwd=stack.root, capture_output=quiet)
    if check and done.returncode:
        raise StackError(f"`{shlex.join(command)}` exited {done.returncode} (its output is above)")
    return done.returncode


def prefect(stack: Stack, args: list[str], check: bool = True, *, quiet: bool = False) -> int:
    """The prefect CLI against the stack's server (see :func:`execute`)."""
    return execute(stack, [str(Path(sys.executable).parent / "prefect"), *args], check, quiet=quiet)


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def deploy(stack: Stack, args: list[str]) -> None:
    """Register prefect.yaml's ``local`` deployments (training, sweep) with the stack's server, cloning this checkout.

    Workers clone the repository named by the Prefect variable ``visionops_repo`` (this checkout, or
    ``VISIONOPS_REPO``: a git URL for workers on other machines) at branch ``visionops_branch`` (the one checked
    out here): the branch's commits, not uncommitted edits. Experiments the runs save are pushed back there.

    Raises:
        StackError: the stack is not running, or a prefect command failed.
    """
    repo = os.environ.get("VISIONOPS_REPO") or str(stack.root)
    branch = _git(stack.root, "rev-parse", "--abbrev-ref", "HEAD") or "main"
    prefect(stack, ["variable", "set", "--overwrite", "visionops_repo", repo])
    prefect(stack, ["variable", "set", "--overwrite", "visionops_branch", branch])
    for pool in (POOL, CONTROL_POOL):
        inspect, create = ["work-pool", "inspect", pool], ["work-pool", "create", pool, "--type", "process"]
        if not prefect(stack, inspect, check=False, quiet=True):
            continue
        # The stack's workers create their pools as they start, which `up` does not wait for: the pool may appear
        # between the two commands, so a failed create counts only if it is still missing (then again, out loud).
        if prefect(stack, create, check=False, quiet=True) and prefect(stack, inspect, check=False, quiet=True):
            prefect(stack, create)
    prefect(stack, ["--no-prompt", "deploy", "--name", "training-pipeline/local", "--name", "sweep/local", *args])
