"""A private Docker engine for the tests: dockerd on a socket of its own, its images kept in a machine-level cache.

The engine's data root (images, build cache) lives in ``$VISIONOPS_CACHE/docker`` (default
``/var/cache/visionops/docker``), beside the debootstrap tarball of docker/build-images.sh, so a second run reuses
the built images instead of rebuilding them; a lock file lets one engine at a time use it. Its socket, exec root
and containerd state live in a temporary folder that is removed on stop.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import run, stop_group

CACHE = Path(os.environ.get("VISIONOPS_CACHE", "/var/cache/visionops"))
# Debian's client (another `docker` may come first on PATH); the compose plugin works with either.
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
INSTALL_HINT = "as root: docker/install-engine.sh (.ci/run runs it on a fresh root machine)"
# dockerd, iptables, ip and debootstrap live in sbin folders, which a plain or sudo shell may leave off PATH.
ROOT_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def unavailable() -> str | None:
    """Why no engine can be started here, or None when it can."""
    if os.geteuid() != 0:
        return "dockerd (and debootstrap) need root; CI runs as root"
    missing = [tool for tool in ("dockerd", "debootstrap", "iptables") if not shutil.which(tool, path=ROOT_PATH)]
    if missing:
        return f"{', '.join(missing)} not installed: {INSTALL_HINT}"
    if run([DOCKER, "compose", "version"], cwd=CACHE.parent, check=False).returncode != 0:
        return f"no Docker Compose v2 plugin: {INSTALL_HINT}"
    return None


class DockerEngine:
    """dockerd started as a child in its own process group; ``env`` points the docker client and docker-py at it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vo-engine-", dir="/tmp"))  # short: socket paths are limited
        self.socket = self.root / "docker.sock"
        self.env = {"DOCKER_HOST": f"unix://{self.socket}"}
        self.proc: subprocess.Popen | None = None
        self.lock = None
        self.had_docker0 = Path("/sys/class/net/docker0").exists()

    def start(self, lock_timeout: float = 1800, timeout: float = 60) -> DockerEngine:
        """Take the cache's lock, start dockerd and wait until it answers.

        Raises:
            RuntimeError: dockerd exited or did not answer within ``timeout`` s; the message ends with its log.
            TimeoutError: another engine held the cache for longer than ``lock_timeout`` s.
        """
        (CACHE / "docker").mkdir(parents=True, exist_ok=True)
        self.lock = open(CACHE / "engine.lock", "w")  # noqa: SIM115 - held until stop()
        deadline = time.monotonic() + lock_timeout
        while True:
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{CACHE / 'engine.lock'} held by another engine for {lock_timeout} s") from None
                time.sleep(5)
        cmd = [shutil.which("dockerd", path=ROOT_PATH), "--host", self.env["DOCKER_HOST"]]
        cmd += ["--data-root", str(CACHE / "docker")]
        cmd += ["--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid")]
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - kept open for the process's lifetime
        env = os.environ | {"PATH": ROOT_PATH}  # dockerd runs iptables and runc from there
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.docker("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = (self.root / "dockerd.log").read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"dockerd did not start: {text}")
            time.sleep(0.5)
        return self

    def docker(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run the docker client against this engine."""
        return run([DOCKER, *args], cwd=self.root, check=check, timeout=timeout, **self.env)

    def stop(self) -> None:
        """Stop dockerd (it stops its containerd), remove the temporary folder and the bridge it made, unlock."""
        stop_group(self.proc, timeout=60)
        self.proc = None
        if not self.had_docker0 and Path("/sys/class/net/docker0").exists():
            ip = shutil.which("ip", path=ROOT_PATH) or "ip"
            subprocess.run([ip, "link", "delete", "docker0"], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None


def build_images(engine: DockerEngine, repo: Path) -> tuple[float, str]:
    """docker/build-images.sh on ``engine``; its duration in seconds and its report (sizes, per-image times)."""
    start = time.monotonic()
    done = run(["bash", str(repo / "docker/build-images.sh")], cwd=repo, timeout=3600, PATH=ROOT_PATH, **engine.env)
    return time.monotonic() - start, done.stderr
