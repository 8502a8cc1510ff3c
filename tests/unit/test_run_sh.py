"""run.sh's choices: the interpreter it accepts, and the CPU/GPU build and extras it keeps between commands.

The whole install (`./run.sh setup` run twice from a plain shell leaves .venv untouched) is walked in
tests/e2e/test_journey.py, in a fresh clone.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """run.sh alone in an empty folder: nothing installed next to it."""
    shutil.copy2(REPO / "run.sh", tmp_path / "run.sh")
    return tmp_path / "run.sh"


def _bash(script: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    """Source run.sh (its functions only) and run ``code`` in its folder."""
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; cd {script.parent}; source ./run.sh; {code}"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )


def _old_python() -> str | None:
    """A real interpreter older than 3.11 on this machine (pyenv or Debian), if any."""
    found = sorted(Path("/root/.pyenv/versions").glob("3.1[0]*/bin/python3.1[0]")) + sorted(
        Path("/usr/bin").glob("python3.[6-9]")
    )
    return str(found[0]) if found else None


def test_an_unsupported_python_is_refused_with_the_versions_needed(script: Path) -> None:
    old = _old_python()
    if old is None:
        pytest.skip("no Python older than 3.11 on this machine to try")
    done = subprocess.run(
        [str(script), "setup"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": old}, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "needs Python 3.11, 3.12 or 3.13" in done.stderr, done.stderr
    assert old in done.stderr and "PYTHON=" in done.stderr
    assert not (script.parent / ".venv").exists() and not (script.parent / ".tools/bin").exists(), "nothing installed"


def test_a_shim_resolves_to_the_real_interpreter(script: Path) -> None:
    """uv rebuilds .venv when --python names another path than its base interpreter: a pyenv shim must be resolved
    to the interpreter binary it runs (a shim is a shell script), of the same version."""
    shim = shutil.which("python3.11") or shutil.which("python3")
    assert shim is not None
    resolved = _bash(script, "find_python", PATH=str(Path(shim).parent) + ":/usr/bin:/bin").stdout.strip()
    assert Path(resolved).resolve(strict=True).read_bytes()[:4] == b"\x7fELF", (
        f"{resolved} is not an interpreter binary"
    )
    if Path(shim).read_bytes()[:2] == b"#!":  # (pyenv: the shim is a script; elsewhere it may be the binary itself)
        assert resolved != shim
    version = "import sys; print(sys.version_info[:2])"
    same = [subprocess.run([p, "-c", version], capture_output=True, text=True).stdout for p in (shim, resolved)]
    assert same[0] == same[1] != ""


def test_the_gpu_choice_and_extras_persist_until_changed(script: Path) -> None:
    assert _bash(script, "choose; echo $tf $with").stdout.split() == ["cpu"]
    assert _bash(script, "choose --gpu --with docker; echo $tf $with").stdout.split() == ["gpu", "docker"]
    assert _bash(script, "choose; echo $tf $with").stdout.split() == ["gpu", "docker"], "a plain call keeps them"
    assert _bash(script, "choose; echo $tf", VISIONOPS_GPU="0").stdout.split() == ["cpu"]
    assert _bash(script, "choose; echo $tf").stdout.split() == ["cpu"]
    assert _bash(script, "choose; echo $tf", VISIONOPS_GPU="1").stdout.split() == ["gpu"]
    bad = _bash(script, "choose --with podman")
    assert bad.returncode == 2 and "unknown extra 'podman'" in bad.stderr
