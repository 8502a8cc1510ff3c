"""Pooled features of a frozen pretrained backbone, computed once per image view and kept for every later run.

While the backbone is frozen (fine-tuning's first stage), the head learns from the backbone's pooled features, which
depend only on the image, the view of it, the weights and the preprocessing: running the backbone again every epoch
would recompute the same numbers. So each (image, view) is embedded once and stored under a key made of exactly
those inputs, and later trainings, ``dvc exp run`` experiments and sweep trials reuse it.

Views. View 0 of an example is what evaluation sees (the centre crop, rotated for the orientation task); views
1 … ``train.head.views`` − 1 are training views: a random crop and the ``augment`` pipeline, seeded by the image's
content hash and the view's number, so an image has the same views whichever list or position it is in. Each epoch
of the head stage shows every training example in one of its views, drawn per epoch; validation always uses view 0.

Where: ``$VISIONOPS_CACHE_DIR/embeddings/`` (default ``$XDG_CACHE_HOME/visionops`` or ``~/.cache/visionops``),
shared by every checkout, ``dvc exp run --temp`` copy and Prefect worker clone on the machine. One folder per feature
space (variant, weights sha256, sizes, :data:`~visionops.data.preprocess.PIXELS_VERSION`), holding append-only shards
(``.npz``: keys and float32 features) written atomically, one per chunk of images, so a killed run keeps what it
finished. A shard that cannot be read (its zip CRC fails) is skipped with a warning and its views are computed
again; deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from visionops.data.preprocess import PIXELS_VERSION
from visionops.progress import track

log = logging.getLogger(__name__)
CACHE_ENV = "VISIONOPS_CACHE_DIR"
CHUNK = 256  # views embedded and stored per shard


def cache_root() -> Path:
    """The machine's visionops cache: ``$VISIONOPS_CACHE_DIR``, else ``$XDG_CACHE_HOME/visionops``, else
    ``~/.cache/visionops``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "visionops"


@dataclass(frozen=True)
class FeatureSpace:
    """What makes two pooled-feature vectors comparable: the backbone, its weights and the pixels it was fed."""

    model: str
    weights_sha256: str
    image_size: int
    resize_side: int
    precision: str = "float32"  # Keras' dtype policy: mixed_float16 features (GPU) differ from float32 ones
    pixels_version: int = PIXELS_VERSION

    def folder(self, root: Path) -> Path:
        """This space's folder under the cache ``root``."""
        key = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        return Path(root) / "embeddings" / f"{self.model}-{self.image_size}px-{key}"


class EmbeddingStore:
    """The stored features of one :class:`FeatureSpace`, by view key; ``None`` root keeps them in memory only."""

    def __init__(self, space: FeatureSpace, root: Path | None) -> None:
        self.folder = space.folder(root) if root is not None else None
        self.known: dict[str, np.ndarray] = {}
        if self.folder is not None and self.folder.is_dir():
            for shard in sorted(self.folder.glob("[!.]*.npz")):  # (not a writer's temporary file)
                self._load(shard)

    def _load(self, shard: Path) -> None:
        try:
            with np.load(shard, allow_pickle=False) as data:
                keys, features = data["keys"], data["features"]
            self.known.update(zip(keys.tolist(), features, strict=True))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            log.warning("embedding shard %s cannot be read (%s): its views are computed again", shard, err)

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Positions of ``keys`` that have no stored features."""
        return [i for i, key in enumerate(keys) if key not in self.known]

    def add(self, keys: Sequence[str], features: np.ndarray) -> None:
        """Keep ``features`` (one row per key); on disk as one more shard, written whole or not at all."""
        features = np.asarray(features, dtype=np.float32)
        self.known.update(zip(keys, features, strict=True))
        if self.folder is None:
            return
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # A temporary name of this writer's own: runs that share the cache may write the same shard at once.
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".tmp-", suffix=".npz", delete=False) as f:
                try:
                    np.savez(f, keys=np.asarray(keys, dtype=str), features=features)
                    f.close()
                    os.replace(f.name, self.folder / f"{name}.npz")
                finally:
                    Path(f.name).unlink(missing_ok=True)
        except OSError as err:  # (a full or read-only disk: the cache only saves time, the run goes on without it)
            log.warning("cannot store embeddings in %s (%s): this run keeps them in memory", self.folder, err)
            self.folder = None

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """The stored features of ``keys``, stacked (every key must be known)."""
        return np.stack([self.known[key] for key in keys])


def view_keys(shas: Sequence[str], rotations: Sequence[int], *, view: int, augment_key: str) -> list[str]:
    """The store keys of view ``view`` of examples with content hashes ``shas`` and ``rotations``.

    View 0 (the centre crop) does not depend on the augmentation; training views do, through ``augment_key``.
    """
    tag = "centre" if view == 0 else f"view{view}-{augment_key}"
    return [f"{sha}:{int(r)}:{tag}" for sha, r in zip(shas, rotations, strict=True)]


def embed(
    store: EmbeddingStore,
    keys: Sequence[str],
    *,
    make_input: Callable[[int], np.ndarray],
    predict: Callable[[np.ndarray], np.ndarray],
    what: str,
) -> np.ndarray:
    """Features of every key: stored ones read, the others computed :data:`CHUNK` at a time and stored.

    Args:
        store: where features are kept.
        keys: one per example view.
        make_input: example position → the model input of that view (float32 or uint8, 0–255).
        predict: a batch of inputs → pooled features (the frozen backbone).
        what: names the views in the progress line.
    """
    todo = store.missing(keys)
    if todo:
        log.info("embedding %d of %d %s (%d stored)", len(todo), len(keys), what, len(keys) - len(todo))
        starts = range(0, len(todo), CHUNK)
        for start in track(starts, len(starts), f"embedding {len(todo)} {what}"):
            chunk = todo[start : start + CHUNK]
            inputs = np.stack([make_input(i) for i in chunk]).astype(np.float32)
            store.add([keys[i] for i in chunk], predict(inputs))
    return store.get(keys)
