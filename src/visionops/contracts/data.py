"""The data stages' files: validate's manifest, and the split's lists and split.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from visionops.contracts.base import csv_text, known_fields, read_json
from visionops.files import atomic_write_text, sha256_bytes, write_json

SPLITS = ("train", "val", "test")
MANIFEST_FILE = "manifest.csv"


@dataclass(frozen=True)
class SplitInfo:
    """``split.json``: the split's classes, counts per side and class, a hash of each list and the split's id."""

    classes: list[str]
    counts: dict[str, dict[str, int]]
    totals: dict[str, int]
    sha256: dict[str, str]
    split_id: str
    warnings: list[str] = field(default_factory=list)

    FILE = "split.json"

    @classmethod
    def read(cls, split_dir: Path) -> SplitInfo:
        """Read ``split_dir/split.json``.

        Raises:
            FileNotFoundError: the split stage has not run.
        """
        return cls(**known_fields(cls, read_json(Path(split_dir) / cls.FILE, "split")))

    def write(self, split_dir: Path) -> None:
        """Write split.json into ``split_dir``."""
        write_json(Path(split_dir) / self.FILE, asdict(self))


def read_split(split_dir: Path) -> tuple[dict[str, pd.DataFrame], SplitInfo]:
    """The train/val/test lists (path, label, sha256) and split.json of the split stage.

    Raises:
        FileNotFoundError: the split stage has not run.
    """
    info = SplitInfo.read(split_dir)
    lists = {s: pd.read_csv(split_list(split_dir, s), dtype=str, keep_default_na=False) for s in SPLITS}
    return lists, info


def split_list(split_dir: Path, side: str) -> Path:
    """The file listing the ``side`` (train, val or test) split's images: what messages point a user at."""
    return Path(split_dir) / f"{side}.csv"


def write_split_lists(split_dir: Path, lists: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Write the train, val and test lists into ``split_dir``; returns each file's sha256 by name (for split.json)."""
    hashes = {}
    for side in SPLITS:
        text = csv_text(lists[side])
        atomic_write_text(split_list(split_dir, side), text)
        hashes[f"{side}.csv"] = sha256_bytes(text.encode("utf-8"))
    return hashes


def write_manifest(folder: Path, manifest: pd.DataFrame) -> Path:
    """Write validate's manifest (a row per file of data/) into ``folder``; returns its path."""
    target = Path(folder) / MANIFEST_FILE
    atomic_write_text(target, csv_text(manifest))
    return target


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest: ``path`` is the file, or validate's folder holding it.

    Raises:
        FileNotFoundError: validate has not run.
    """
    path = Path(path)
    path = path / MANIFEST_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the validate stage first (`dvc repro validate`).")
    return pd.read_csv(path, dtype=str, keep_default_na=False)
