"""Files of data/ that came out of a damaged DVC cache object, which DVC itself does not notice.

`dvc checkout` copies a cache object into data/ without hashing it, and records the file as holding the object's
md5; `dvc status` and `dvc repro` then trust that record, so a byte flipped in ``.dvc/cache`` (a bad disk, a tool
writing through a link) reaches every stage unnoticed. The validate stage reads every file anyway: it hashes each
with md5 too, and where a file differs from what ``data.dvc`` records, looks at the cache object it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import yaml

from visionops.errors import UserError

log = logging.getLogger(__name__)


class DamagedCacheError(UserError):
    """Files of data/ hold the bytes of DVC cache objects whose md5 is not their name; the message says how to
    get intact copies."""


def _cache_dir(root: Path) -> Path:
    """The project's DVC cache folder (``cache.dir`` of .dvc/config, else ``.dvc/cache``)."""
    from dvc.config import Config

    configured = Config(dvc_dir=str(root / ".dvc")).get("cache", {}).get("dir")
    return Path(configured) if configured else root / ".dvc" / "cache"


def _object(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def damaged_checkouts(data_dir: Path, md5s: dict[str, str]) -> list[str]:
    """Files of ``data_dir`` whose bytes are those of a damaged DVC cache object, as ``data/<path>`` lines.

    Args:
        data_dir: the data folder, tracked by ``<name>.dvc`` beside it (else nothing is checked).
        md5s: each file's md5, by path relative to ``data_dir`` (posix).

    Returns:
        One line per such file, naming it and the cache object; empty when none (or no DVC listing to compare).
    """
    data_dir = Path(data_dir)
    dvc_file = data_dir.parent / f"{data_dir.name}.dvc"
    try:
        listing_md5 = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
        cache = _cache_dir(data_dir.parent)
        entries = json.loads(_object(cache, listing_md5).read_text())
    except (OSError, KeyError, IndexError, TypeError, ValueError):
        return []  # not tracked by DVC, or its listing is not in this cache: nothing to compare with
    found, uncached = [], []
    for entry in entries:
        have, recorded = md5s.get(entry["relpath"]), entry["md5"]
        if have is None or have == recorded:
            continue
        obj = _object(cache, recorded)
        if not obj.is_file():
            uncached.append(f"{data_dir.name}/{entry['relpath']}")
        elif _md5(obj) == have:  # the file is the object's bytes, and the object is not `recorded`
            found.append(f"{data_dir.name}/{entry['relpath']} (cache object {obj}, md5 {have}, named {recorded})")
    if uncached:  # (a changed file, or one checked out of an object DVC found damaged later and deleted)
        log.warning(
            "%d file(s) differ from what %s records and the DVC cache holds no copy to compare with (%s): if you "
            "did not change them, delete them and `dvc pull`; if you did, `dvc add %s` records them",
            len(uncached),
            dvc_file.name,
            ", ".join(uncached[:3]),
            data_dir.name,
        )
    return found


def check_checkouts(data_dir: Path, md5s: dict[str, str]) -> None:
    """Raise :class:`DamagedCacheError` when :func:`damaged_checkouts` finds any file.

    A file a user changed differs from ``data.dvc`` too, but its bytes are not those of the recorded cache object:
    it is not reported.
    """
    found = damaged_checkouts(data_dir, md5s)
    if found:
        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
        raise DamagedCacheError(
            f"{len(found)} file(s) of {data_dir}/ came from damaged DVC cache objects (their md5 is not the name "
            f"data.dvc records; `dvc checkout` and `dvc status` do not hash cache objects, so DVC did not notice): "
            f"{shown}. Delete those cache objects and those files, then `visionops pull-data` (or `dvc pull`) to "
            "fetch intact copies from the remote (its `verify = true` checks them)."
        )
