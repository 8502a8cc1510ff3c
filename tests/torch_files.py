"""Writes PyTorch checkpoints without PyTorch, in both of its formats, for the reader's tests.

An independent writer of the format (the reader is visionops.training.torch_checkpoint): pickles with the global names
``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` that torch.save writes, made by stand-in modules
registered under those names only while a file is written. It can also plant any callable in the pickle, as a
crafted checkpoint would.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


@contextlib.contextmanager
def _fake_torch() -> Iterator[types.ModuleType]:
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: Any) -> None: ...

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    for name in STORAGES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


class _Storage:
    """Pickled by reference (a persistent id), as torch.save writes a tensor's storage."""

    def __init__(self, key: str, array: np.ndarray, torch: types.ModuleType) -> None:
        self.key, self.array, self.cls = key, array, getattr(torch, STORAGES[array.dtype])


class _Tensor:
    def __init__(self, storage: _Storage) -> None:
        self.storage = storage

    def __reduce__(self) -> tuple:
        array = self.storage.array
        stride = tuple(s // array.itemsize for s in array.strides)
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, 0, array.shape, stride, False, collections.OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.array.size)
        return None


def _state_pickle(state: dict[str, Any], torch: types.ModuleType) -> tuple[bytes, list[_Storage]]:
    """The state dict's pickle (numpy arrays as tensors; anything else as it is) and the storages it refers to."""
    storages, content = [], collections.OrderedDict()
    for i, (name, value) in enumerate(state.items()):
        if isinstance(value, np.ndarray):
            storages.append(_Storage(str(i), np.ascontiguousarray(value), torch))
            value = _Tensor(storages[-1])
        content[name] = value
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(content)
    return buffer.getvalue(), storages


def write_legacy(path: Path, state: dict[str, Any]) -> Path:
    """``path`` as ``torch.save(state, path, _use_new_zipfile_serialization=False)`` writes it."""
    with _fake_torch() as torch:
        body, tensors = _state_pickle(state, torch)
        with Path(path).open("wb") as f:
            for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
                pickle.dump(header, f, protocol=2)
            f.write(body)
            pickle.dump([t.key for t in tensors], f, protocol=2)
            for t in tensors:
                f.write(t.array.size.to_bytes(8, "little"))
                f.write(t.array.tobytes())
    return Path(path)


def write_zip(path: Path, state: dict[str, Any]) -> Path:
    """``path`` as ``torch.save(state, path)`` writes it (the zip format of PyTorch >= 1.6)."""
    with _fake_torch() as torch:
        body, tensors = _state_pickle(state, torch)
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", body)
            for t in tensors:
                archive.writestr(f"archive/data/{t.key}", t.array.tobytes())
    return Path(path)


class Planted:
    """An object whose unpickling calls ``target(*args)``: what a crafted checkpoint carries."""

    def __init__(self, target: Any, *args: Any) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple:
        return self.target, self.args
