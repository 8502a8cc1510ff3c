"""Small file helpers shared by every stage: project paths, atomic writes, hashing, stable JSON, path containment."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from visionops.errors import UserError

_CHUNK = 1 << 20


def project_root(start: Path | None = None) -> Path:
    """The nearest folder holding dvc.yaml, from ``start`` (the working directory) up; else ``start``."""
    here = Path(start or Path.cwd()).resolve()
    return next((p for p in (here, *here.parents) if (p / "dvc.yaml").is_file()), here)


def store_root(start: Path | None = None) -> Path:
    """The checkout that owns what runs produce locally: its MLflow store (mlflow.db, mlartifacts/) and stack.

    That is the project root, except inside ``dvc exp run --temp`` or a queued experiment: DVC runs those stages in
    a throwaway copy under ``.dvc/tmp/exps/`` and exports ``DVC_ROOT`` as the checkout the experiment came from. A
    store inside the copy would be deleted with it, so runs go to the checkout's store.
    """
    return Path(os.environ["DVC_ROOT"]).resolve() if os.environ.get("DVC_ROOT") else project_root(start)


def project_store(root: Path | None = None) -> str:
    """The project's own MLflow tracking store: a sqlite file in the checkout (see :func:`store_root`)."""
    return f"sqlite:///{store_root(root) / 'mlflow.db'}"


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks so large files stay out of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_umask() -> int:
    """The process's umask. Reading it means setting it, so this runs once, at import, before any thread starts."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a torn one.

    A stage killed mid-write must not leave a truncated file that a later stage would load, so the
    bytes go to a temporary file in the same folder and replace the target with one ``os.replace``.

    Raises:
        OSError: the folder cannot be created or written; the message names the path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OSError(f"cannot write {path}: {err.strerror or err}. Check that the folder is writable.") from err
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the mode any other new file would get
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that only takes a file name (Keras ``save``, ``np.save``); on
    success it replaces ``path`` in one ``os.replace``, on failure it is removed. Readers never see half a file.

    The temporary name ends like ``path`` (``.tmp-model.keras``, ``.tmp-stage1.weights.h5``): writers choose the
    format by the name's ending, and Keras insists on whole endings such as ``.weights.h5``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class DiskFullError(UserError):
    """The disk holding a stage's outputs is full; the message names the folder, the room needed and the fix."""


DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is a full disk (ENOSPC, EDQUOT).

    Libraries that write through C (HDF5 for Keras weights, TensorFlow's summary writers) keep only the OS's text,
    not its errno: those are recognised by the text.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc) for text in DISK_FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    here = Path(folder).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    return shutil.disk_usage(here).free


def human_bytes(count: float) -> str:
    """``count`` bytes as a short figure: 812 B, 3.4 MB, 1.2 GB (powers of 1000, as df -H shows them)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


class disk_room(contextlib.AbstractContextManager):  # (lower case: used like a function, `with disk_room(...):`)
    """Fail early, and clearly, when the disk holding ``folder`` has no room for ``what``.

    With ``need`` (bytes) the free space is checked first, before any work (with ``check_first``; otherwise ``need``
    is an estimate the message only quotes); a disk that fills up anyway (other writers, an estimate too low) is
    turned into the same kind of error, naming the folder and the room needed, instead of an OS error without a path
    or a library's traceback. The writers inside clean up after themselves (:func:`atomic_path`).

    HDF5 (Keras weights files) keeps a file it failed to write open; the command line exits without the interpreter's
    cleanup after this error (``visionops.cli.common``), where h5py's retry of that write crashed the process.

    Raises:
        DiskFullError: not enough room, before or during the work inside.
    """

    def __init__(
        self,
        folder: Path,
        need: int | None,
        what: str,
        then: str = "then run the command again",
        check_first: bool = True,
    ) -> None:
        self.folder, self.need, self.what, self.then, self.check_first = Path(folder), need, what, then, check_first

    def error(self, during: bool) -> DiskFullError:
        free = free_bytes(self.folder)
        needs = f"needs about {human_bytes(self.need)}, " if self.need is not None else ""
        state = "filled up while writing" if during else "has too little room"
        return DiskFullError(
            f"no space left for {self.what} in {self.folder}: the disk {state} ({needs}{human_bytes(free)} free "
            f"now). Free space there, or point it at a larger disk; {self.then}."
        )

    def __enter__(self) -> None:
        if self.check_first and self.need is not None and free_bytes(self.folder) < self.need:
            raise self.error(during=False)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None or isinstance(exc, DiskFullError) or not is_disk_full(exc):
            return
        raise self.error(during=True) from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def dump_json(obj: Any) -> str:
    """Serialise ``obj`` as stable, human-readable JSON (sorted keys, trailing newline).

    Stable bytes matter: DVC hashes outputs, so a rerun with the same inputs must write the same file.
    """
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as stable JSON to ``path``."""
    atomic_write_text(path, dump_json(obj))


HIDDEN_NAMES = ("Thumbs.db", "desktop.ini")  # OS clutter that is never an image


def is_hidden(rel: Path) -> bool:
    """True for dot-files, dot-folders and OS clutter (``.DS_Store``, ``Thumbs.db``) anywhere in ``rel``."""
    return any(part.startswith(".") for part in rel.parts) or rel.name in HIDDEN_NAMES


def image_files(source: Path) -> list[Path]:
    """``source`` itself if it is a file, else every non-hidden file below it, sorted (the images to read).

    Raises:
        FileNotFoundError: ``source`` does not exist.
    """
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    return sorted(p for p in source.rglob("*") if p.is_file() and not is_hidden(p.relative_to(source)))


class PathEscapeError(UserError, ValueError):
    """A path from data/, params.yaml or a manifest leads outside the folder it must stay in."""


def is_inside(path: Path | str, root: Path | str) -> bool:
    """True when ``path``, with every symlink and ``..`` resolved, lies within the resolved ``root``."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    except ValueError:
        return False
    return True


def inside(root: Path | str, path: Path | str, key: str) -> Path:
    """Resolve ``path`` against ``root`` and insist that it stays within ``root``: no absolute path, no ``..``
    climbing out, no symlink leading out.

    Every caller that turns a user-supplied path (a params value, a manifest row) into a file to read goes
    through here, so a ``..`` or a symlink cannot lead a stage outside the project or data/.

    Args:
        root: the folder the path must stay in (data/, or the project root).
        path: the user's path, relative to ``root``.
        key: where the path came from (``train.weights``, ``manifest.csv row 3``), named in the error.

    Returns:
        The resolved path.

    Raises:
        PathEscapeError: the path is absolute, climbs out with ``..``, or resolves outside ``root``.
    """
    target = Path(root) / path
    if os.path.isabs(path) or climbs_out(str(path)) or not is_inside(target, root):
        raise PathEscapeError(
            f"{key}: '{path}' leads outside {root}/ (to {os.path.realpath(target)}). Paths there are relative to "
            f"{root}/ and stay inside it: copy the file into {root}/ instead of linking or pointing to it."
        )
    return Path(os.path.realpath(target))


def climbs_out(path: str) -> bool:
    """True for a relative path whose ``..`` parts climb above its starting folder (``../x``, ``a/../../x``)."""
    if os.path.isabs(path):
        return False
    return os.path.normpath(path).split(os.sep)[0] == ".."
