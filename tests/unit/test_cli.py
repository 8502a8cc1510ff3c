"""The CLI: help on every command, --version, --json results for scripts, and one exit code per kind of failure
(1 a user error, 2 a usage error, 3 a server unavailable, 4 an internal error), never a traceback but for 4."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from corpus import good_class
from helpers import REPO, free_port, mark_project, venv_tool
from typer.testing import CliRunner

from visionops import __version__
from visionops.cli import app
from visionops.cli.common import command
from visionops.errors import EXIT_INTERNAL, EXIT_UNAVAILABLE, EXIT_USAGE, EXIT_USER

runner = CliRunner()


COMMANDS = [
    "sample-data",
    "validate",
    "split",
    "train",
    "evaluate",
    "export",
    "predict",
    "promote",
    "log-run",
    "ui",
    "weights",
]


@pytest.mark.parametrize("command_name", COMMANDS)
def test_every_command_has_help(command_name: str) -> None:
    result = runner.invoke(app, [command_name, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and len(result.output) > 200
    assert runner.invoke(app, [command_name, "-h"]).output == result.output, "-h is --help"


def test_version_and_short_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"visionops {__version__}\n")
    shown = runner.invoke(app, ["-h"])
    assert shown.exit_code == 0 and "validate" in shown.stdout and "promote" in shown.stdout
    assert "Exit codes: 0 done; 1 a user error" in " ".join(shown.stdout.split()), "the codes are documented"


def test_weights_lists_every_variant_and_what_is_here_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from visionops.variants import VARIANT_SIZES

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache: no B/V2 weights here
    result = runner.invoke(app, ["weights", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.stdout)}
    assert set(rows) == set(VARIANT_SIZES)
    lite = [rows[f"EfficientNetLite{n}"] for n in range(3)]
    assert all(r["imagenet offline"] == "yes" and "pytorch-model 0.1.0 (sha256 checked)" in r["source"] for r in lite)
    assert rows["EfficientNetLite2"]["size"] == "260"
    assert rows["EfficientNetB0"]["imagenet offline"] == "no" and str(tmp_path) in rows["EfficientNetB0"]["source"]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "efficientnetb0_notop.h5").write_bytes(b"cached")
    rows = {r["model"]: r for r in json.loads(runner.invoke(app, ["weights", "--json"]).stdout)}
    assert rows["EfficientNetB0"]["imagenet offline"] == "yes" and rows["EfficientNetB1"]["imagenet offline"] == "no"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two classes of five images and a params.yaml."""
    (tmp_path / "params.yaml").write_text("validate:\n  min_images_per_class: 3\n")
    good_class(tmp_path / "data", "cat", 5)
    good_class(tmp_path / "data", "dog", 5)
    return tmp_path


def test_stages_through_the_cli(project: Path) -> None:
    common = ["--params", str(project / "params.yaml")]
    result = runner.invoke(app, ["validate", *common, "--data", str(project / "data"), "--out", str(project / "v")])
    assert result.exit_code == 0, result.output
    assert "10 usable" in result.output
    manifest = str(project / "v" / "manifest.csv")
    result = runner.invoke(app, ["split", *common, "--manifest", manifest, "--out", str(project / "s")])
    assert result.exit_code == 0, result.output
    assert sum(json.loads((project / "s" / "split.json").read_text())["totals"].values()) == 10


def test_json_results_are_what_the_stages_wrote(project: Path) -> None:
    """--json prints the stage's result alone on stdout (warnings go to stderr): a script parses it as it is."""
    common = ["--params", str(project / "params.yaml"), "--json"]
    (project / "data" / "empty").mkdir()  # a warning, which must stay off stdout
    validated = runner.invoke(app, ["validate", *common, "--data", str(project / "data"), "--out", str(project / "v")])
    assert validated.exit_code == 0, validated.output
    summary = json.loads(validated.stdout)
    assert summary == json.loads((project / "v" / "summary.json").read_text())
    assert (summary["usable"], summary["classes"]) == (10, {"cat": 5, "dog": 5})
    assert summary["warnings"] == ["class folder 'empty' holds no image: ignored"]
    assert "warning: class folder 'empty' holds no image" in validated.stderr

    manifest = str(project / "v" / "manifest.csv")
    split = runner.invoke(app, ["split", *common, "--manifest", manifest, "--out", str(project / "s")])
    assert split.exit_code == 0, split.output
    info = json.loads(split.stdout)
    assert info == json.loads((project / "s" / "split.json").read_text())
    assert info["classes"] == ["cat", "dog"] and sum(info["totals"].values()) == 10 and len(info["split_id"]) == 64

    written = runner.invoke(app, ["sample-data", "--out", str(project / "new"), "--per-class", "1", "--json"])
    paths = json.loads(written.stdout)
    assert sorted(paths) == sorted(str(p) for p in (project / "new").rglob("*.jpg")) and len(paths) == 4


def test_bad_params_exit_1_with_the_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("split:\n  test_ratio: 2\n")
    result = runner.invoke(app, ["split", "--params", str(params), "--manifest", str(tmp_path / "m.csv")])
    assert result.exit_code == EXIT_USER == 1
    assert "split.test_ratio: Input should be less than 1" in result.output
    assert "Traceback" not in result.output


def test_a_params_typo_exits_1_naming_the_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("split:\n  test_ratoi: 0.3\n")
    result = runner.invoke(app, ["split", "--params", str(params), "--json"])
    assert result.exit_code == EXIT_USER
    assert "split.test_ratoi: unknown key" in result.stderr and "Did you mean 'test_ratio'?" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output, "no JSON and no traceback on an error"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["validate", "--nope"], "No such option: --nope"), (["valdate"], "No such command 'valdate'"), (["predict"], "")],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_USAGE == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.fixture
def unreachable_tracking(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLFLOW_TRACKING_URI naming a port of 127.0.0.1 nothing listens on; MLflow's own setting is put back after."""
    import mlflow

    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    mlflow.set_tracking_uri(None)  # (connect() sets it, and MLflow copies it into the environment)


@pytest.mark.parametrize("args", [["registry"], ["rollback"], ["log-run"]])
def test_an_unreachable_tracking_server_exits_3(tmp_path: Path, unreachable_tracking: str, args: list[str]) -> None:
    (tmp_path / "params.yaml").write_text("")
    result = runner.invoke(app, [*args, "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == EXIT_UNAVAILABLE == 3, result.output
    message = " ".join(result.stderr.split())
    assert f"MLflow tracking server {unreachable_tracking} (set by MLFLOW_TRACKING_URI) is unreachable" in message
    assert "unset MLFLOW_TRACKING_URI" in message and "Traceback" not in result.output


def test_a_stack_that_is_not_running_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(mark_project(tmp_path))
    result = runner.invoke(app, ["stack", "status", "--json"])
    assert result.exit_code == EXIT_UNAVAILABLE, result.output
    assert json.loads(result.stdout) == {"running": False}


def test_a_bug_exits_4_with_its_traceback() -> None:
    """Every command runs through `command`; anything but a user or OS error is a bug, shown whole. (No command
    of the package fails this way on purpose, so a command that does is made here.)"""
    demo = typer.Typer()

    @demo.command()
    @command
    def broken() -> None:
        {}["missing"]  # the bug

    result = runner.invoke(demo, [])
    assert result.exit_code == EXIT_INTERNAL == 4
    assert "Traceback" in result.stderr and "KeyError: 'missing'" in result.stderr
    assert "internal error: KeyError('missing') (a bug: please report it with the traceback)" in result.stderr


def test_the_program_skips_only_tensorflows_teardown_at_exit(tmp_path: Path) -> None:
    """`visionops` (visionops.cli.main) ends a command that loaded TensorFlow without the interpreter's module
    teardown: what must still happen does (the exit code, the output, the atexit handlers)."""
    marker = tmp_path / "atexit-ran"
    script = (
        "import atexit, pathlib, sys, tensorflow\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')\n"
        "sys.argv[1:] = ['--version']\n"
        "from visionops.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout) == (0, f"visionops {__version__}\n"), done.stderr[-2000:]
    assert marker.read_text() == "ran"

    shutil.copy(REPO / "params.yaml", tmp_path)  # evaluate loads TensorFlow, then finds no model
    args = ["evaluate", "--model", "none", "--data", ".", "--split", ".", "--out", "out"]
    done = subprocess.run([venv_tool("visionops"), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_USER, done.stderr[-2000:]
    assert "error: none: no such model file; train one with `dvc repro train`" in done.stderr


def test_sample_data_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.jpg").write_bytes(b"mine")
    result = runner.invoke(app, ["sample-data", "--out", str(tmp_path / "data")])
    assert result.exit_code == 1 and "refusing" in result.output
    assert (tmp_path / "data" / "keep.jpg").read_bytes() == b"mine"
    result = runner.invoke(app, ["sample-data", "--out", str(tmp_path / "new"), "--per-class", "2", "--size", "32"])
    assert result.exit_code == 0 and len(list((tmp_path / "new").rglob("*.jpg"))) == 8
