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
        GIT_AUTHOR_NAME="tests", GIT_AUTHOR_EMAIL="tests@localhost", GIT_COMMITTER_NAME="tests",
        GIT_COMMITTER_EMAIL="tests@localhost", DVC_NO_ANALYTICS="1", NO_ALBUMENTATIONS_UPDATE="1",
        GX_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1",
    )  # fmt: skip
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


class MlflowServer:
    """A real `mlflow server` process on 127.0.0.1 (sqlite backend, local artifacts), started and stopped by PID."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port = root, port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 120) -> MlflowServer:
        import subprocess
        import sys
        import time
        import urllib.request

        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--default-artifact-root", (self.root / "artifacts").as_uri()]  # fmt: skip
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=tool_env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout} s")

    def stop(self) -> None:
        import os
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
            try:
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - still alive: kill it
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
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


def tiny_project(root: Path, params_yaml: str, classes: tuple[str, ...] = ("ant", "bee", "cow"), per_class: int = 8,
                 split_seed: int = 1) -> Path:  # fmt: skip
    """A tiny project: params.yaml, and the validate/split outputs of ``classes`` × ``per_class`` images."""
    from corpus import good_class

    from visionops.config import SplitParams, ValidateParams
    from visionops.split import split
    from visionops.validate import validate

    for label in classes:
        good_class(root / "data", label, per_class)
    validate(root / "data", ValidateParams(min_images_per_class=3), root / "artifacts" / "validate")
    split(root / "artifacts/validate/manifest.csv", SplitParams(test_ratio=0.25, seed=split_seed),
          root / "artifacts/split")  # fmt: skip
    (root / "params.yaml").write_text(params_yaml)
    (root / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
    return root


def cli(*args: str) -> list[str]:
    """The visionops command line, run with this interpreter."""
    import sys

    return [sys.executable, "-m", "visionops.cli", *args]
