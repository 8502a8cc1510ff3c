"""PyTorch checkpoints read safely: tensors come back exactly; anything that would run code is refused unrun."""

from __future__ import annotations

import builtins
import importlib
import os
from pathlib import Path

import numpy as np
import pytest
from torch_files import Planted, write_legacy, write_zip

from visionops.training.torch_checkpoint import CheckpointError, read_state_dict
from visionops.training.weights import PACKAGED, packaged_file

STATE = {
    "conv.weight": np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 7,
    "bn.running_var": np.array([0.5, 2.0], dtype=np.float32),
    "bn.num_batches_tracked": np.array([12], dtype=np.int64),
}
WRITERS = {"legacy": write_legacy, "zip": write_zip}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_tensors_come_back_exactly_in_both_formats(tmp_path: Path, fmt: str) -> None:
    found = read_state_dict(WRITERS[fmt](tmp_path / "w.pth", STATE))
    assert list(found) == list(STATE)
    for name, array in STATE.items():
        assert found[name].dtype == array.dtype and found[name].shape == array.shape
        np.testing.assert_array_equal(found[name], array)


def test_a_transposed_view_is_read_through_its_strides(tmp_path: Path) -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = base.T  # strides (4, 16): the writer keeps them, as torch.save does for a non-contiguous tensor
    path = write_legacy(tmp_path / "t.pth", {"t": view})
    np.testing.assert_array_equal(read_state_dict(path)["t"], view)


def _refused(path: Path, called: str) -> str:
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and called in message, message
    return message


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_a_planted_os_system_is_refused_and_never_runs(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "ran"
    crafted = WRITERS[fmt](tmp_path / "evil.pth", {**STATE, "x": Planted(os.system, f"touch {marker}")})
    _refused(crafted, "system")  # (os.system pickles as posix.system)
    assert not marker.exists()


def test_an_import_is_refused(tmp_path: Path) -> None:
    crafted = write_legacy(tmp_path / "import.pth", {**STATE, "x": Planted(importlib.import_module, "antigravity")})
    _refused(crafted, "importlib.import_module")


def test_builtins_are_refused(tmp_path: Path) -> None:
    crafted = write_legacy(tmp_path / "eval.pth", {"x": Planted(builtins.eval, "1 + 1")})
    _refused(crafted, "eval")  # (protocol 2 names it __builtin__.eval)


def test_a_planted_call_in_a_header_pickle_is_refused(tmp_path: Path) -> None:
    path = write_legacy(tmp_path / "w.pth", STATE)
    import pickle

    crafted = tmp_path / "header.pth"
    crafted.write_bytes(pickle.dumps(Planted(os.system, "true"), protocol=2) + path.read_bytes())
    _refused(crafted, "system")


@pytest.mark.parametrize("keep", [0.0, 0.05, 0.5, 0.99])
def test_a_truncated_file_is_one_line_naming_it(tmp_path: Path, keep: float) -> None:
    whole = write_legacy(tmp_path / "whole.pth", STATE).read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(CheckpointError) as info:
        read_state_dict(cut)
    assert "\n" not in str(info.value) and str(cut) in str(info.value)


def test_a_file_of_another_kind_is_one_line(tmp_path: Path) -> None:
    other = tmp_path / "notes.pth"
    other.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes\.pth: not a readable PyTorch checkpoint"):
        read_state_dict(other)


def test_a_checkpoint_holding_more_than_tensors_is_refused(tmp_path: Path) -> None:
    path = write_legacy(tmp_path / "mixed.pth", {**STATE, "epoch": 3})
    with pytest.raises(CheckpointError, match=r"entry 'epoch' is a int, not a tensor"):
        read_state_dict(path)


@pytest.mark.parametrize("variant", sorted(PACKAGED))
def test_the_packaged_checkpoints_are_whole_state_dicts(variant: str) -> None:
    path, _ = packaged_file(variant)
    state = read_state_dict(path)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(a.dtype == (np.int64 if k.endswith("num_batches_tracked") else np.float32) for k, a in state.items())
    assert all(np.isfinite(a).all() for a in state.values())
