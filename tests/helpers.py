"""Plain functions the tests share: paths, the subprocess environment, commands, processes, tiny projects.

The test servers (MLflow, PostgreSQL, S3, Prefect, `visionops ui`, `mlflow models serve`) and their fixtures are
in tests/servers.py, a pytest plugin; tests reach them through fixtures only.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.request
from pathlib import Path

from visionops.config import Params, TrainParams

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # image side of model tests: tiny, so B0 trains in seconds on CPU


def tool_env(**extra: str | None) -> dict[str, str]:
    """The environment for subprocesses: this venv's tools first on PATH, git identity, offline switches; then
    ``extra``, where None removes a variable (``MLFLOW_TRACKING_URI=None``: the project's own store)."""
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
    return {key: value for key, value in env.items() if value is not None}


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600, **env: str | None):
    """Run a command as a user would, capturing output; on failure show it in the assertion."""
    import subprocess

    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(**env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli(*args: str) -> list[str]:
    """The visionops command line, run with this interpreter."""
    import sys

    return [sys.executable, "-m", "visionops.cli", *args]


def venv_tool(name: str) -> str:
    """A console script of this venv (``mlflow``, ``visionops``, ``moto_server``), by absolute path."""
    import sys

    return str(Path(sys.executable).parent / name)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- processes -----------------------------------------------------------------------------------------------------


def spawn(cmd: list[str], log: Path, env: dict[str, str | None] | None = None, cwd: Path | None = None):
    """Start ``cmd`` in a process group of its own (so it is stopped with everything it spawns), output to ``log``.

    ``env`` is added to :func:`tool_env`.
    """
    import subprocess

    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 - kept open for the process's lifetime
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=tool_env(**(env or {})), start_new_session=True
    )


def wait_until_up(url: str, proc, log: Path, timeout: float, what: str) -> None:
    """Poll ``url`` until any HTTP answer comes back (an error status still means the server listens).

    Raises:
        RuntimeError: the process exited or did not answer within ``timeout`` s; the message ends with its log.
    """
    import time
    import urllib.error
    import urllib.request

    def tail() -> str:
        return log.read_text(errors="replace")[-3000:] if log.is_file() else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} not answering {url} after {timeout} s: {tail()}")


def stop_group(proc, sig: int | None = None, timeout: float = 30) -> None:
    """Stop a process started in its own session (:func:`spawn`) and everything it spawned; SIGKILL if it lingers."""
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


def processes() -> list[tuple[int, list[str], str]]:
    """Every process now: its pid, the fields of /proc/<pid>/stat after the name (state, ppid, pgid, ...) and its
    command line (arguments joined by spaces)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # (it exited meanwhile)
            continue
        found.append((int(stat.parent.name), fields, cmdline))
    return found


# --- files and repositories ----------------------------------------------------------------------------------------


def md5s(folder: Path) -> dict[str, str]:
    """Each file's md5 (what DVC names its objects by), by path relative to ``folder``."""
    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def copy_checkout(dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """This checkout's files (tracked and new, not ignored; modes kept) copied into ``dest``, but for paths
    starting with one of ``skip``. What a commit of the working tree would hold."""
    import shutil

    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file() and not rel.startswith(skip):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def git_init(folder: Path) -> None:
    """Make ``folder`` a git repository on branch main."""
    run(["git", "init", "-q", "-b", "main"], cwd=folder)


def git_commit(folder: Path, message: str) -> None:
    """Commit everything in ``folder``'s working tree."""
    run(["git", "add", "-A"], cwd=folder)
    run(["git", "commit", "-q", "-m", message], cwd=folder)


def mark_project(folder: Path) -> Path:
    """Make ``folder`` a project root (a dvc.yaml), so its MLflow store and stack live there, not in the repo."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dvc.yaml").write_text("stages: {}\n")
    return folder


# --- tiny params, projects and origins -----------------------------------------------------------------------------


def tiny_params(**overrides) -> TrainParams:
    """TrainParams for 32-px B0 runs in tests.

    Stage 2 unfreezes the top block only, here and in every test that trains: the first step of a stage traces its
    training graph, which for the whole backbone takes minutes on 2 cores (for one block, a fraction of that), and
    what the tests check does not depend on how deep stage 2 reaches.
    """
    base = {
        "model": "EfficientNetB0",
        "image_size": SIZE,
        "weights": None,
        "batch_size": 8,
        "head": {"epochs": 1},
        "finetune": {"epochs": 1, "unfreeze_blocks": 1},
    }
    return TrainParams.model_validate({**base, **overrides})


def tiny_settings(train: TrainParams | None = None, augment: list | tuple = (), workers: int = 1) -> Params:
    """The whole params of a tiny training: ``train`` (default :func:`tiny_params`), ``augment`` and the threads."""
    from visionops.config import AugmentStep, RuntimeParams

    steps = [s if isinstance(s, AugmentStep) else AugmentStep.model_validate(s) for s in augment]
    return Params(train=train or tiny_params(), augment=steps, runtime=RuntimeParams(workers=workers))


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
    from visionops.stages.split import split
    from visionops.stages.validate import validate

    for label in classes:
        good_class(root / "data", label, per_class)
    validate(root / "data", ValidateParams(min_images_per_class=3), root / "artifacts" / "validate")
    split(
        root / "artifacts/validate/manifest.csv",
        SplitParams(test_ratio=0.25, seed=split_seed),
        root / "artifacts/split",
    )
    (root / "params.yaml").write_text(params_yaml)
    return mark_project(root)


TINY_PIPELINE = {
    "validate": {"min_images_per_class": 3},
    "train": {
        "image_size": 32,
        "batch_size": 16,
        "head": {"epochs": 1},
        "finetune": {"epochs": 1, "unfreeze_blocks": 1},  # (see tiny_params)
    },
    "promote": {"min_metric": None},
    "runtime": {"workers": 1},
}


def merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into ``base`` key by key, nested dicts included (``base`` is changed and returned)."""
    for key, value in extra.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def tiny_origin(dest: Path, remote: str | None = None, endpoint: str | None = None, **env: str) -> Path:
    """A git repository like this checkout with a tiny generated dataset (TINY_PIPELINE's params).

    With no ``remote`` the data is where this repository keeps its sample: pushed to the in-repo remote ``sample``
    (``dvc-remote/``, committed) with .dvc/config as committed, so a clone pushes to the default remote under ``~``.
    A local folder ``remote`` becomes the default remote ``sample`` (the laptop setup with a remote outside the
    repository); an S3 URL is the team setup, made the way a user makes it: ``dvc remote add -d team``, plus
    ``dvc remote modify team endpointurl`` when ``endpoint`` (its server) is given; the credentials come from ``env``
    (AWS_*), never from .dvc/config.
    """
    import yaml

    copy_checkout(dest, skip=("dvc-remote/",))
    params = merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY_PIPELINE)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "data.dvc").unlink()
    run(cli("sample-data", "--out", "data", "--per-class", "12", "--size", "48"), cwd=dest)
    git_init(dest)
    name = "team" if remote and remote.startswith("s3://") else "sample"
    remote_cmds = [["dvc", "remote", "add", "-f", "-d", name, remote]] if remote else []
    if endpoint:  # else each machine names its S3 endpoint in AWS_ENDPOINT_URL_S3, as the compose workers do
        remote_cmds.append(["dvc", "remote", "modify", name, "endpointurl", endpoint])
    push = ["dvc", "push", "-q", *([] if remote else ["-r", "sample"])]  # a given remote is the default now
    for cmd in (*remote_cmds, ["dvc", "add", "-q", "data"], push):
        run(cmd, cwd=dest, **env)
    git_commit(dest, "tiny origin")
    return dest


def readme_commands(marker: str) -> list[str]:
    """The command lines of the README's code block that follows ``marker`` (comments and blank lines dropped)."""
    text = (REPO / "README.md").read_text()
    block = re.search(re.escape(marker) + r".*?\n```bash\n(.*?)\n```", text, re.S)
    assert block, f"README.md has no code block after {marker!r}"
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def get_json(url: str, body: dict | None = None) -> dict | list:
    """GET ``url`` (POST ``body`` as JSON when given) and return the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
