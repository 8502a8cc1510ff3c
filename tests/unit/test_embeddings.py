"""The embedding store: features kept by view key across runs, damaged or half-written shards never used."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from visionops.training.embeddings import CACHE_ENV, EmbeddingStore, FeatureSpace, cache_root, embed, view_keys

SPACE = FeatureSpace("EfficientNetLite0", "ab" * 32, 224, 258)


def _features(keys: list[str]) -> np.ndarray:
    """Features that differ per key, so a mix-up shows."""
    return np.stack([np.frombuffer(k.encode().ljust(16, b"."), np.uint8)[:16].astype(np.float32) for k in keys])


class Counting:
    """A backbone stand-in that counts the inputs it is given."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        self.seen += len(inputs)
        return inputs.reshape(len(inputs), -1)[:, :4] * 2


def _embed(store: EmbeddingStore, keys: list[str], backbone: Counting) -> np.ndarray:
    return embed(store, keys, make_input=lambda i: np.full((2, 2, 3), i, np.float32), predict=backbone, what="views")


def test_features_are_computed_once_and_reused_by_a_later_store(tmp_path: Path) -> None:
    keys = view_keys([f"{i:064x}" for i in range(10)], [0] * 10, view=0, augment_key="aug")
    first = Counting()
    features = _embed(EmbeddingStore(SPACE, tmp_path), keys, first)
    assert first.seen == 10 and features.shape == (10, 4)
    again = Counting()
    reused = _embed(EmbeddingStore(SPACE, tmp_path), keys, again)  # a new run: reads the shards
    assert again.seen == 0
    np.testing.assert_array_equal(reused, features)
    more = Counting()
    grown = view_keys([f"{i:064x}" for i in range(12)], [0] * 12, view=0, augment_key="aug")
    _embed(EmbeddingStore(SPACE, tmp_path), grown, more)
    assert more.seen == 2, "two images added: only they are embedded"


def test_views_are_keyed_by_content_rotation_view_and_augmentation() -> None:
    sha = "f" * 64
    centre = view_keys([sha], [0], view=0, augment_key="aug1")
    assert centre == view_keys([sha], [0], view=0, augment_key="aug2"), (
        "the centre view does not depend on the augmentation"
    )
    assert view_keys([sha], [0], view=1, augment_key="aug1") != view_keys([sha], [0], view=1, augment_key="aug2")
    assert (
        view_keys([sha], [90], view=0, augment_key="aug1") != centre
        and view_keys([sha], [0], view=2, augment_key="aug1") != centre
    )


def test_spaces_are_apart(tmp_path: Path) -> None:
    other = FeatureSpace("EfficientNetLite0", "ab" * 32, 192, 221)
    keys = ["k:0:centre"]
    EmbeddingStore(SPACE, tmp_path).add(keys, _features(keys))
    assert EmbeddingStore(other, tmp_path).missing(keys) == [0]
    assert SPACE.folder(tmp_path).name.startswith("EfficientNetLite0-224px-")


def test_a_damaged_shard_is_skipped_with_a_warning_and_computed_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [f"{i}:0:centre" for i in range(50)]
    store = EmbeddingStore(SPACE, tmp_path)
    store.add(keys, _features(keys))
    (shard,) = SPACE.folder(tmp_path).glob("*.npz")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the features
    shard.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="visionops.training.embeddings"):
        reread = EmbeddingStore(SPACE, tmp_path)
    assert reread.missing(keys) == list(range(50))
    assert str(shard) in caplog.text and "computed again" in caplog.text


def test_a_writers_temporary_file_is_never_read(tmp_path: Path) -> None:
    folder = SPACE.folder(tmp_path)
    folder.mkdir(parents=True)
    keys = ["k:0:centre"]
    with (folder / ".tmp-half.npz").open("wb") as f:
        np.savez(f, keys=np.asarray(keys), features=_features(keys))
    assert EmbeddingStore(SPACE, tmp_path).missing(keys) == [0]


def test_a_memory_store_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    store = EmbeddingStore(SPACE, None)
    keys = ["k:0:centre"]
    store.add(keys, _features(keys))
    assert store.missing(keys) == [] and not any(tmp_path.iterdir())


def test_an_unwritable_cache_leaves_the_features_in_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would go")
    store = EmbeddingStore(SPACE, blocked)
    keys = ["k:0:centre"]
    with caplog.at_level(logging.WARNING, logger="visionops.training.embeddings"):
        store.add(keys, _features(keys))
    assert store.missing(keys) == [] and "keeps them in memory" in caplog.text


def test_the_cache_root_follows_the_variable_then_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "visionops"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "visionops"
