"""The CLI: help on every command, user errors as one clear line and exit code 1, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus import good_class
from typer.testing import CliRunner

from visionops.cli import app

runner = CliRunner()


COMMANDS = ["sample-data", "validate", "split", "train", "evaluate", "export", "predict", "promote", "log-run", "ui"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and len(result.output) > 200


def test_stages_through_the_cli(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  min_images_per_class: 3\n")
    good_class(tmp_path / "data", "cat", 5)
    good_class(tmp_path / "data", "dog", 5)
    common = ["--params", str(params)]
    result = runner.invoke(app, ["validate", *common, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    assert "10 usable" in result.output
    manifest = str(tmp_path / "v" / "manifest.csv")
    result = runner.invoke(app, ["split", *common, "--manifest", manifest, "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert sum(json.loads((tmp_path / "s" / "split.json").read_text())["totals"].values()) == 10


def test_bad_params_exit_1_with_the_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("split:\n  test_ratio: 2\n")
    result = runner.invoke(app, ["split", "--params", str(params), "--manifest", str(tmp_path / "m.csv")])
    assert result.exit_code == 1
    assert "split.test_ratio: Input should be less than 1" in result.output
    assert "Traceback" not in result.output


def test_sample_data_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.jpg").write_bytes(b"mine")
    result = runner.invoke(app, ["sample-data", "--out", str(tmp_path / "data")])
    assert result.exit_code == 1 and "refusing" in result.output
    assert (tmp_path / "data" / "keep.jpg").read_bytes() == b"mine"
    result = runner.invoke(app, ["sample-data", "--out", str(tmp_path / "new"), "--per-class", "2", "--size", "32"])
    assert result.exit_code == 0 and len(list((tmp_path / "new").rglob("*.jpg"))) == 8
