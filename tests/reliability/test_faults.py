"""Fault injection with real processes: a tracking server that is down, an unreachable or interrupted DVC remote,
stages killed while writing, an output folder the user cannot write, the tracking server's database restarted.
Corrupted files and full disks: test_damaged.py and test_disk_full.py.

Faults already covered elsewhere (not repeated here): `visionops train` killed mid fine-tuning then resumed
(tests/model/test_train.py::test_resume_after_kill), the MLflow server lost mid-run then `visionops log-run`
(tests/e2e/test_tracking.py), racing promotions (tests/e2e/test_registry.py), a Prefect worker killed mid-flow
(tests/e2e/test_prefect.py). docs/reliability.md tabulates all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG

import numpy as np
import pandas as pd
import pytest
import yaml
from corpus import good_class, tree_digest
from helpers import REPO, cli, free_port, git_commit, git_init, md5s, run, stop_group, tiny_project, tool_env

pytestmark = [pytest.mark.e2e, pytest.mark.faults]
TRAIN_PARAMS = "train: {image_size: 32, weights: null, batch_size: 8, model: EfficientNetB0, finetune: {epochs: 1}}\n"


def _kill_when(cmd: list[str], cwd: Path, ready: Callable[[], bool], **env: str) -> int:
    """Start ``cmd`` in its own process group and SIGKILL the group as soon as ``ready()`` holds.

    Returns:
        The exit status: -9 when the kill landed while the command still ran.
    """
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=tool_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while proc.poll() is None and not ready():
            time.sleep(0.002)
        stop_group(proc, signal.SIGKILL)
        return proc.wait()
    finally:
        stop_group(proc, signal.SIGKILL)


# --- MLflow down at start ------------------------------------------------------------------------------------------


def test_tracking_server_down_at_start_fails_fast_and_loses_nothing(tmp_path: Path) -> None:
    """MLFLOW_TRACKING_URI names a port nothing listens on: train stops before any work, says what to do."""
    project = tiny_project(tmp_path / "project", TRAIN_PARAMS)
    before = {k: v for k, v in tree_digest(project).items() if v != b"<dir>"}
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    failed = run(cli("train"), cwd=project, check=False, timeout=120, MLFLOW_TRACKING_URI=uri)
    print(f"train with the tracking server down exited {failed.returncode} after {time.monotonic() - started:.1f} s")
    assert failed.returncode == 3, failed.stderr  # exit 3: a server is unavailable (visionops.errors)
    message = " ".join(failed.stderr.split())  # rich wraps long lines
    for part in (uri, "MLFLOW_TRACKING_URI", "Start it", "unset MLFLOW_TRACKING_URI", "nothing was trained"):
        assert part in message, (part, message)
    assert "Traceback" not in failed.stderr
    after = {k: v for k, v in tree_digest(project).items() if v != b"<dir>"}
    assert after == before, "no file was written, changed or removed: there was nothing to lose"
    assert not (project / "artifacts/.resume").exists(), "no half-started training to resume"


# --- An output folder the user cannot write ----------------------------------------------------------------------


def test_unwritable_output_folder_is_named_with_the_fix(tmp_path: Path) -> None:
    """`visionops validate` run by an unprivileged user into a folder owned by root: one clear line, no traceback."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the stage as another user (root writes everywhere)")
    # pytest's tmp_path sits in a root-only (0700) folder the other user cannot enter: use a world-readable one.
    base = Path(tempfile.mkdtemp(prefix="visionops-unwritable-"))
    try:
        base.chmod(0o755)
        good_class(base / "data", "ant", 3)
        (base / "params.yaml").write_text("validate: {min_images_per_class: 1}\n")
        (base / "out").mkdir()  # root's, mode 755: others may read, not write
        cmd = [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            *cli("validate", "--params", "params.yaml", "--data", "data", "--out", str(base / "out")),
        ]
        failed = run(cmd, cwd=base, check=False, timeout=120, HOME=str(base))
        message = " ".join(failed.stderr.split())
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert f"cannot write to the output folder {base / 'out'}: Permission denied" in message, message
        assert "--out" in message and "writable" in message, message
        assert "Traceback" not in failed.stderr
        assert list((base / "out").iterdir()) == []
    finally:
        shutil.rmtree(base)


# --- A stage killed while writing --------------------------------------------------------------------------------

VALIDATE_OUTS = ("manifest.csv", "quarantine.csv", "summary.json", "params.json")


def _temp_file(path: Path) -> bool:
    """The atomic writers' temporary files: ``.<name>.<random>.tmp`` beside the target (files.py)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _assert_complete(out: Path, images: int) -> dict[str, list[str]]:
    """Every validate output present is whole (parses, every row); returns what was there, outputs and temps."""
    present = {"outputs": [], "temps": []}
    for path in sorted(p for p in out.iterdir() if p.is_file()):
        if _temp_file(path):
            present["temps"].append(path.name)
            continue
        assert path.name in VALIDATE_OUTS, f"unexpected file {path}"
        present["outputs"].append(path.name)
        text = path.read_text()
        assert text.endswith("\n"), f"{path} is truncated"
        if path.name == "manifest.csv":
            manifest = pd.read_csv(path)
            assert len(manifest) == images and (manifest["status"] == "ok").all(), f"{path} lacks rows"
        elif path.name == "quarantine.csv":
            assert list(pd.read_csv(path).columns) == ["path", "label", "reason"]
        elif path.name == "summary.json":
            assert json.loads(text)["usable"] == images
        else:
            assert json.loads(text)["min_images_per_class"] == 3
    return present


def _written(folder: Path, pattern: str) -> Callable[[], bool]:
    """A predicate: true once a file matching ``pattern`` in ``folder`` is created or rewritten after this call.

    (Files of earlier killed runs stay, so "exists" would fire at once; a new inode or mtime marks this run's write.)
    """

    def state() -> dict[Path, tuple[int, int]]:
        found = {}
        for path in folder.glob(pattern):
            try:
                stat = path.stat()
            except FileNotFoundError:  # a temp file renamed meanwhile
                continue
            if S_ISREG(stat.st_mode):  # (a folder's mtime moves whenever a file in it is written)
                found[path] = (stat.st_ino, stat.st_mtime_ns)
        return found

    before = state()
    return lambda: any(before.get(path) != key for path, key in state().items())


@pytest.mark.slow  # real servers or processes killed mid-write: tens of seconds
def test_validate_killed_while_writing_leaves_only_complete_outputs(tmp_path: Path) -> None:
    """SIGKILL `visionops validate` at staggered points of its writing phase; then the rerun succeeds."""
    for label in ("ant", "bee", "cow"):
        good_class(tmp_path / "data", label, 100)
    (tmp_path / "params.yaml").write_text("validate: {min_images_per_class: 3}\n")
    out = tmp_path / "artifacts/validate"
    cmd = cli("validate", "--data", "data", "--out", str(out))
    # GE writes its HTML first (≈ 0.7 s); the manifest, quarantine list, summary and params follow within ms.
    points = {
        "GE writing Data Docs": "data_docs/index.html",
        "first output file (temp or final)": "*",
        "manifest.csv in place": "manifest.csv",
    }
    for name, pattern in points.items():
        status = _kill_when(cmd, tmp_path, _written(out, pattern))
        assert status == -signal.SIGKILL, f"validate ended ({status}) before the kill at '{name}'"
        print(f"killed at {name}: {_assert_complete(out, 300)}")
    outs = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["validate"]["outs"]
    temps = [p for p in out.iterdir() if _temp_file(p)]
    assert not {f"artifacts/validate/{p.name}" for p in temps} & set(outs), "a temp file is named like an output"

    run(cmd, cwd=tmp_path)
    assert set(_assert_complete(out, 300)["outputs"]) == set(VALIDATE_OUTS)
    assert (out / "data_docs/index.html").read_text().rstrip().endswith("</html>")


# --- DVC remote unreachable, then back; a pull killed mid-transfer ----------------------------------------------

FILES, FILE_SIZE = 160, 256 * 1024  # 40 MB: a pull takes about a second here, long enough to be cut mid-way


def _cached(project: Path) -> tuple[list[Path], list[Path]]:
    """The objects in the clone's DVC cache so far, and DVC's partial downloads (``<name>.<random>.tmp``)."""
    files = [p for p in (project / ".dvc/cache/files/md5").glob("*/*") if p.is_file()]
    return [p for p in files if p.suffix != ".tmp"], [p for p in files if p.suffix == ".tmp"]


def _origin_and_clone(tmp_path: Path, endpoint: str) -> tuple[Path, Path]:
    """A repository whose data/ is tracked by DVC with an S3 remote at ``endpoint``, and a git clone of it."""
    origin, clone = tmp_path / "origin", tmp_path / "clone"
    origin.mkdir()
    rng = np.random.default_rng(0)
    for i in range(FILES):
        path = origin / "data" / f"c{i % 4}" / f"{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(FILE_SIZE))
    git_init(origin)
    for cmd in (
        ["dvc", "init", "-q"],
        ["dvc", "add", "-q", "data"],
        ["dvc", "remote", "add", "-d", "store", "s3://dvc-store/cache"],
        ["dvc", "remote", "modify", "store", "endpointurl", endpoint],
    ):
        run(cmd, cwd=origin)
    git_commit(origin, "data")
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=tmp_path)
    return origin, clone


@pytest.mark.slow  # real servers or processes killed mid-write: tens of seconds
def test_dvc_remote_down_then_back_and_a_pull_killed_midway(tmp_path: Path, s3_server_down) -> None:
    """Pull from an S3 remote nobody answers (clear error), then once it is back; then SIGKILL a pull mid-way."""
    s3 = s3_server_down
    origin, clone = _origin_and_clone(tmp_path, s3.endpoint)
    # One attempt, not botocore's 5 with backoff (≈ 25 s measured here): the outcome is the same, only sooner.
    env = s3.env() | {"AWS_MAX_ATTEMPTS": "1"}
    down = run(["dvc", "pull"], cwd=clone, check=False, **env)
    assert down.returncode != 0
    assert "failed to connect to s3" in down.stderr and s3.endpoint in down.stderr, down.stderr
    assert not (clone / "data").exists() or not any((clone / "data").rglob("*.bin")), "nothing half-pulled"

    s3.start()
    s3.bucket("dvc-store")
    run(["dvc", "push", "-q"], cwd=origin, **env)  # the remote is back, holding the origin's data
    expected = md5s(origin / "data")
    run(["dvc", "pull", "-q"], cwd=clone, **env)
    assert md5s(clone / "data") == expected, "the retried pull is byte-identical to the origin"

    shutil.rmtree(clone / "data")
    shutil.rmtree(clone / ".dvc/cache")
    objects = FILES + 1  # every file, plus the .dir listing of data/
    status = _kill_when(["dvc", "pull", "-q"], clone, lambda: len(_cached(clone)[0]) >= objects // 3, **env)
    cached, partial = _cached(clone)
    print(f"dvc pull killed with {len(cached)} of {objects} objects fetched, {len(partial)} partial downloads")
    assert status == -signal.SIGKILL and 0 < len(cached) < objects, "the kill landed mid-transfer"
    for obj in cached:  # what DVC kept is whole: it renames a download into place only once complete
        assert hashlib.md5(obj.read_bytes()).hexdigest() == obj.parent.name + obj.name.removesuffix(".dir")
    run(["dvc", "pull", "-q"], cwd=clone, **env)
    assert md5s(clone / "data") == expected, "every file complete, none missing, nothing extra in data/"
    assert "up to date" in run(["dvc", "status"], cwd=clone, **env).stdout


# --- PostgreSQL restarted under a running tracking server ----------------------------------------------------------

RESTART_PARAMS = """
train: {image_size: 32, weights: null, batch_size: 8, model: EfficientNetB0, head: {epochs: 1},
       finetune: {epochs: 2, unfreeze_blocks: 1}}
tracking: {experiment: database-restart}
"""


@pytest.mark.slow  # a tiny training against the team stack (PostgreSQL, S3, mlflow server): minutes on 2 cores
def test_database_restarted_under_the_tracking_server_mid_run(tmp_path: Path, team_mlflow, postgres_server) -> None:
    """The team tracking server's PostgreSQL restarts (fast shutdown, 3 s down) while `visionops train` logs into it:
    the training ends, evaluate ends the run, and after `visionops log-run` (which adds whatever the outage kept
    out) the run is complete: FINISHED, every epoch once, the model logged."""
    from mlflow import MlflowClient

    from visionops.tracking.record import LOGGED_TRAINING, MODEL_URI_TAG

    project = tiny_project(tmp_path / "project", RESTART_PARAMS)
    uri = team_mlflow.uri
    proc = subprocess.Popen(
        cli("train"),
        cwd=project,
        env=tool_env(MLFLOW_TRACKING_URI=uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        client, deadline = MlflowClient(uri), time.monotonic() + 600
        while not list(project.glob("artifacts/.resume/train-*/mlflow_run_id")) and time.monotonic() < deadline:
            time.sleep(0.2)
        run_id = next(project.glob("artifacts/.resume/train-*/mlflow_run_id")).read_text().strip()
        while not client.get_metric_history(run_id, "loss") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, "the restart lands while the training still runs"
        boot = "SELECT pg_postmaster_start_time()"
        before, log_from = postgres_server.query("postgres", boot), (team_mlflow.root / "server.log").stat().st_size
        postgres_server.restart(down_s=3)
        assert postgres_server.query("postgres", boot) != before, "PostgreSQL really restarted"
        _, err = proc.communicate(timeout=1200)
    finally:
        stop_group(proc, signal.SIGKILL)
    warnings = [line for line in err.splitlines() if "WARNING" in line or "failed" in line]
    with (team_mlflow.root / "server.log").open("rb") as log:
        log.seek(log_from)
        server = [line for line in log.read().decode(errors="replace").splitlines() if "Error" in line]
    print(f"train exited {proc.returncode}; its warnings: {warnings}; server errors meanwhile: {server[:3]}")
    assert proc.returncode == 0, err[-3000:]
    assert json.loads((project / "artifacts/train/run.json").read_text())["run_id"] == run_id

    run(cli("evaluate"), cwd=project, MLFLOW_TRACKING_URI=uri)  # (it ends the run: FINISHED)
    logged = " ".join(run(cli("log-run"), cwd=project, MLFLOW_TRACKING_URI=uri).stdout.split())
    print(logged)
    assert f"run {run_id}" in logged
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED", finished.info.status
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2], "every epoch once"
    assert finished.data.tags[LOGGED_TRAINING] == "true" and MODEL_URI_TAG in finished.data.tags
