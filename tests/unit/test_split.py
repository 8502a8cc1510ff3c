"""split: seeded, duplicate-aware, stable under additions, byte-identical on rerun."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from visionops.config import SplitParams
from visionops.stages.split import SplitError, assign, split, unit_hash


def _manifest(n_per_class: dict[str, int], start: int = 0) -> pd.DataFrame:
    rows = []
    for label, n in n_per_class.items():
        for i in range(start, start + n):
            sha = hashlib.sha256(f"{label}{i}".encode()).hexdigest()
            rows.append({"path": f"{label}/{i:05d}.jpg", "label": label, "sha256": sha, "status": "ok"})
    return pd.DataFrame(rows)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_unit_hash_is_uniform_and_seeded() -> None:
    values = [unit_hash(hashlib.sha256(str(i).encode()).hexdigest(), 1) for i in range(4000)]
    assert all(0 <= v < 1 for v in values)
    assert abs(sum(v < 0.2 for v in values) / len(values) - 0.2) < 0.03
    assert unit_hash("ab", 1) == unit_hash("ab", 1) != unit_hash("ab", 2)


def test_proportions_per_class() -> None:
    frame = _manifest({"a": 2000, "b": 1000})
    side = assign(frame, SplitParams(test_ratio=0.2, val_ratio=0.1))
    for label in ("a", "b"):
        shares = side[frame["label"] == label].value_counts(normalize=True)
        assert shares["test"] == pytest.approx(0.2, abs=0.03)
        assert shares["val"] == pytest.approx(0.08, abs=0.03)  # 10% of the remaining 80%


def test_duplicates_land_on_the_same_side() -> None:
    frame = _manifest({"a": 300})
    copies = frame.copy()
    copies["path"] = copies["path"].str.replace(".jpg", "_copy.jpg")
    both = pd.concat([frame, copies], ignore_index=True)
    side = assign(both, SplitParams())
    assert (side.iloc[:300].to_numpy() == side.iloc[300:].to_numpy()).all()


def test_adding_images_moves_no_existing_image() -> None:
    params = SplitParams(seed=3)
    old = _manifest({"a": 200, "b": 50})
    grown = pd.concat([old, _manifest({"a": 80, "b": 40}, start=1000)], ignore_index=True)
    assert (assign(old, params) == assign(grown, params).iloc[: len(old)]).all()


def test_rerun_is_byte_identical(tmp_path: Path) -> None:
    manifest = _write(_manifest({"a": 40, "b": 40}), tmp_path / "manifest.csv")
    first = split(manifest, SplitParams(), tmp_path / "one")
    second = split(manifest, SplitParams(), tmp_path / "two")
    assert first == second
    for name in ("train.csv", "val.csv", "test.csv", "split.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert first.totals["train"] + first.totals["val"] + first.totals["test"] == 80
    train = pd.read_csv(tmp_path / "one" / "train.csv")
    assert list(train.columns) == ["path", "label", "sha256"]
    assert first.sha256["train.csv"] == hashlib.sha256((tmp_path / "one" / "train.csv").read_bytes()).hexdigest()


def test_quarantined_rows_are_excluded(tmp_path: Path) -> None:
    frame = _manifest({"a": 20, "b": 20})
    frame.loc[:4, "status"] = "quarantined"
    report = split(_write(frame, tmp_path / "m.csv"), SplitParams(), tmp_path / "out")
    assert sum(report.totals.values()) == 35


def test_class_without_training_image_is_an_error(tmp_path: Path) -> None:
    frame = _manifest({"a": 20, "b": 1})
    params = next(SplitParams(seed=s) for s in range(100) if assign(frame, SplitParams(seed=s)).iloc[-1] != "train")
    with pytest.raises(SplitError, match=r"\['b'\] got no training image"):
        split(_write(frame, tmp_path / "m.csv"), params, tmp_path / "out")


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the validate stage first"):
        split(tmp_path / "nope.csv", SplitParams(), tmp_path / "out")
