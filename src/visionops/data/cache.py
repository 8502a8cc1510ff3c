"""Decode once: the image cache the input pipeline reads, in memory or on disk, and the choice between them.

Decoding (visionops.data.preprocess: OpenCV, EXIF orientation applied, grey / RGBA / 16-bit / CMYK turned into 8-bit
RGB) happens once per image, into a square slightly larger than the training size: an array in memory, or a .npy file on
disk that is memory-mapped and that later runs reuse. ``runtime.cache: auto`` keeps memory while the images fit a share
of the available memory. A single pass over a set (scoring) needs no cache: :class:`DecodedOnAccess` decodes each image
when a batch asks for it, so scoring's memory does not grow with the number of images.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from visionops.data.preprocess import PIXELS_VERSION, load_square
from visionops.files import atomic_path, disk_room, write_json
from visionops.progress import track

log = logging.getLogger(__name__)
CHUNK = 256  # images decoded between two copies out: what a disk cache fill holds in memory
CGROUP_MEMORY = (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"))
MEMORY_SHARE = 0.5  # of the available memory cache: auto gives the images; TensorFlow and augmentation need the rest


def available_memory() -> int:
    """Bytes this process can still take: the kernel's MemAvailable, within its container's limit (cgroup v2 or v1).

    A container sees the host's /proc/meminfo: without its cgroup limit a pod would take the node's memory for its own.
    Elsewhere than Linux: the physical memory.
    """
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = int(meminfo.split("MemAvailable:")[1].split()[0]) * 1024
    for limit, usage in CGROUP_MEMORY:
        try:
            room = int(Path("/sys/fs/cgroup", limit).read_text()) - int(Path("/sys/fs/cgroup", usage).read_text())
        except (OSError, ValueError):  # no such cgroup, or "max": no limit
            continue
        available = min(available, max(room, 0))
    return available


def memory_cache_limit(side: int) -> int:
    """How many ``side``-px images ``cache: auto`` keeps in memory now: :data:`MEMORY_SHARE` of the available memory."""
    return int(MEMORY_SHARE * available_memory()) // (side * side * 3)


def cache_dir_for(mode: str, count: int, side: int, *, disk_dir: Path) -> Path | None:
    """The ``cache_dir`` of :func:`cache_images` for ``runtime.cache`` (memory, disk or auto) and ``count`` images.

    ``auto`` takes memory while the images fit :func:`memory_cache_limit`, the disk otherwise, and logs its choice.
    Both hold the same bytes, so the choice never changes a result.
    """
    if mode == "auto":
        limit = memory_cache_limit(side)
        mode = "memory" if count <= limit else "disk"
        log.info("runtime.cache=auto: %s (%d images of %d px; memory holds up to %d)", mode, count, side, limit)
    return None if mode == "memory" else Path(disk_dir)


def _decoded(paths: Sequence[Path], side: int, workers: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first index, images) of ``paths`` as ``side``-px squares, :data:`CHUNK` at a time, decoded on threads."""
    load = functools.partial(load_square, side=side)
    with ThreadPoolExecutor(workers) as pool:
        starts = range(0, len(paths), CHUNK)
        for start in track(starts, len(starts), f"decoding {len(paths)} images"):
            yield start, np.stack(list(pool.map(load, paths[start : start + CHUNK])))


def cache_images(paths: Sequence[Path], side: int, cache_dir: Path | None = None, *, workers: int = 2) -> np.ndarray:
    """Decode ``paths`` once into an (N, side, side, 3) uint8 array.

    Args:
        paths: image files.
        side: cached side, slightly above the training size so random crops have room.
        cache_dir: None keeps the array in memory; a folder keeps it as a .npy file there, named by a hash of the
            paths, side and ``PIXELS_VERSION``, which later runs (and resumed runs) memory-map instead of decoding
            again. The file is written chunk by chunk, so the whole array is never in this process's memory, and
            checked before it is used (:func:`cache_damage`): a damaged file is decoded again, never read.
        workers: decoding threads (OpenCV releases the GIL).
    """
    shape = (len(paths), side, side, 3)
    if cache_dir is None:
        array = np.empty(shape, dtype=np.uint8)
        for start, chunk in _decoded(paths, side, workers):
            array[start : start + len(chunk)] = chunk
        return array
    key = "\n".join([*map(str, paths), str(side), f"pixels {PIXELS_VERSION}"])  # new decoding: a new file
    key = hashlib.sha256(key.encode()).hexdigest()[:16]
    target = Path(cache_dir) / f"images-{side}px-{key}.npy"
    if not target.is_file():
        _fill(target, paths, side, shape, workers)
    elif (damage := cache_damage(target, shape)) is not None:
        log.warning("disk cache %s is not usable (%s): decoding the images again", target, damage)
        _fill(target, paths, side, shape, workers)
    return np.load(target, mmap_mode="r")


def checksum_file(target: Path) -> Path:
    """The file beside a disk cache ``target`` holding its size and CRC-32, written once the fill is complete."""
    return target.with_name(f"{target.name}.json")


def _fill(target: Path, paths: Sequence[Path], side: int, shape: tuple[int, ...], workers: int) -> None:
    """Decode ``paths`` into ``target`` (np.save's format, without the whole array in memory), then its checksum.

    Complete or absent: a killed or failed fill never leaves half a cache under the final name, and a cache without
    its checksum file is never used. A full disk is checked before the first image is decoded and named if it
    fills up anyway.
    """
    checksum_file(target).unlink(missing_ok=True)
    header = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(np.uint8))
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    size = len(header.getvalue()) + int(np.prod(shape))
    then = "or set `runtime.cache: memory` if the images fit in memory. Nothing half-written was kept: run it again"
    with disk_room(Path(target).parent, size, "the disk cache (runtime.cache: disk)", then):
        with atomic_path(target) as tmp, tmp.open("wb") as f:
            f.write(header.getvalue())
            crc = zlib.crc32(header.getvalue())
            for _, chunk in _decoded(paths, side, workers):
                crc = zlib.crc32(np.ascontiguousarray(chunk).data, crc)
                chunk.tofile(f)
        write_json(checksum_file(target), {"bytes": size, "crc32": crc, "shape": list(shape)})


def cache_damage(target: Path, shape: tuple[int, ...]) -> str | None:
    """Why the disk cache ``target`` must not be used, or None when it is whole.

    Checked once per training (not per epoch): the header's shape and dtype against the images asked for, the file's
    size against the header, then the CRC-32 of every byte against the one written at the end of the fill (one read
    of the file, about a second per GB here; a damaged cache costs one decoding pass, never a silent result).
    """
    try:
        expected = json.loads(checksum_file(target).read_text())
        expected_bytes, expected_crc = int(expected["bytes"]), int(expected["crc32"])
    except FileNotFoundError:
        return "no checksum file beside it: its fill did not finish, or an older visionops wrote it"
    except (ValueError, KeyError, TypeError):
        return f"its checksum file {checksum_file(target).name} is unreadable"
    try:
        with target.open("rb") as f:
            if np.lib.format.read_magic(f) != (1, 0):
                return "not an .npy file of format 1.0"
            header_shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            data_start = f.tell()
            if tuple(header_shape) != tuple(shape) or fortran or dtype != np.uint8:
                return f"its header says {dtype} {tuple(header_shape)}, not uint8 {tuple(shape)}"
            size = os.fstat(f.fileno()).st_size
            if size != data_start + int(np.prod(shape)) or size != expected_bytes:
                return f"{size} bytes where the header and checksum file say {expected_bytes}: truncated or extended"
            f.seek(0)
            crc = 0
            while block := f.read(1 << 24):
                crc = zlib.crc32(block, crc)
    except ValueError as exc:  # (numpy: a header it cannot parse)
        return f"unreadable header ({exc})"
    if crc != expected_crc:
        return f"CRC-32 {crc:08x} where the fill wrote {expected_crc:08x}: its bytes changed on disk"
    return None


class DecodedOnAccess:
    """``paths`` as ``side``-px squares, each decoded when it is indexed: what :class:`Batches` reads in one pass
    (scoring), where a cache would only hold every image at once."""

    def __init__(self, paths: Sequence[Path], side: int) -> None:
        self.paths, self.side = list(paths), side
        self._last = threading.local()  # per batch-making thread: (index, image) it decoded last

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        # The orientation task asks for each image four times in a row (one per rotation): decode it once.
        last = getattr(self._last, "item", None)
        if last is None or last[0] != i:
            last = self._last.item = (i, load_square(self.paths[i], self.side))
        return last[1]
