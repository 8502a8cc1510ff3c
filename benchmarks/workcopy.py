"""What the benchmarks that run the pipeline share: a command runner and a private copy of this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sh(cmd: list[str], cwd: Path, merge: bool = False, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` with this venv first on PATH and no MLflow/Prefect/visionops setting of the caller's shell (only
    ``env``'s).

    Returns its stdout, with its stderr (the log) interleaved when ``merge``.

    Raises:
        SystemExit: the command failed; the message holds its command line and the end of its output.
    """
    full = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for key in [k for k in full if k.startswith(("MLFLOW_", "PREFECT_", "VISIONOPS_"))]:
        del full[key]
    err = subprocess.STDOUT if merge else subprocess.PIPE
    done = subprocess.run(cmd, cwd=cwd, env={**full, **(env or {})}, stdout=subprocess.PIPE, stderr=err, text=True)
    if done.returncode:
        raise SystemExit(f"$ {' '.join(cmd)}\n{done.stdout[-3000:]}\n{(done.stderr or '')[-3000:]}")
    return done.stdout


def copy_checkout(dest: Path, skip: tuple[str, ...] = ("dvc-remote/",)) -> Path:
    """Copy this checkout's tracked and untracked-but-not-ignored files to ``dest`` (not its outputs or venv)."""
    listed = sh(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO)
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file() and not rel.startswith(skip):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def commit_all(project: Path) -> None:
    """Commit everything in the git repository ``project`` (DVC experiments and run caches need commits)."""
    for cmd in (
        ["git", "add", "-A"],
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"],
    ):
        sh(cmd, project)
