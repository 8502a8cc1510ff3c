"""The split stage: train / val / test lists from the validated manifest.

Each image's side is decided by a seeded hash of its *content*, class by class:

* identical files (same sha256) always land on the same side, so no duplicate leaks across the split;
* adding images to a class never moves an existing image to the other side: its hash does not change;
* with the same manifest and params the lists are byte-identical.

The price of that stability is that per-class proportions are exact only in expectation; split.json
records the real counts and warns when a class gets no test or validation image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from visionops.config import SplitParams
from visionops.contracts.data import SPLITS, SplitInfo, read_manifest, write_split_lists
from visionops.contracts.results import write_resolved
from visionops.errors import UserError
from visionops.files import inside, sha256_bytes

LIST_COLUMNS = ["path", "label", "sha256"]


class SplitError(UserError, ValueError):
    """The split cannot give every class a training image. The message says how to fix it."""


def unit_hash(sha256: str, seed: int) -> float:
    """Map a content hash and a seed to a float in [0, 1), uniformly and reproducibly."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(manifest: pd.DataFrame, params: SplitParams) -> pd.Series:
    """Return the side ('train', 'val' or 'test') of every row of ``manifest`` (needs a ``sha256`` column).

    Test takes ``test_ratio`` of the hash range; validation takes ``val_ratio`` of what is left.
    """
    u = manifest["sha256"].map(lambda s: unit_hash(s, params.seed))
    val_end = params.test_ratio + (1 - params.test_ratio) * params.val_ratio
    side = pd.Series("train", index=manifest.index)
    side[u < val_end] = "val"
    side[u < params.test_ratio] = "test"
    return side


def check_rows(usable: pd.DataFrame, manifest_csv: Path, data_dir: Path) -> None:
    """Refuse manifest rows whose path leaves ``data_dir`` or whose label is not the path's class folder.

    validate never writes such rows; a hand-edited or foreign manifest could, and train would then read
    ``data/../../anything``. Checking here keeps every later stage, which reads the split lists, inside data/.

    Raises:
        PathEscapeError: a path is absolute, climbs out with ``..`` or resolves outside ``data_dir``.
        SplitError: a label is not the first folder of its path.
    """
    for number, (_, row) in enumerate(usable.iterrows(), start=1):
        where = f"{manifest_csv} row {number}"  # data rows counted from 1, as a spreadsheet shows them
        inside(data_dir, row["path"], f"{where} (path)")
        if row["path"].split("/")[0] != row["label"] or row["label"] in ("", ".", ".."):
            raise SplitError(
                f"{where}: label '{row['label']}' is not the class folder of '{row['path']}'. "
                "Do not edit the manifest by hand: re-run `visionops validate` to rebuild it."
            )


def split(manifest_csv: Path, params: SplitParams, out_dir: Path, *, data_dir: Path = Path("data")) -> SplitInfo:
    """Run the split stage over the usable rows of the validate stage's manifest.

    Args:
        manifest_csv: ``artifacts/validate/manifest.csv``.
        params: the ``split`` section of params.yaml.
        out_dir: where train.csv, val.csv, test.csv, split.json and params.json go.
        data_dir: the folder the manifest's paths are relative to; no row may lead outside it.

    Returns:
        What split.json holds: counts per split and class, a hash of each list, the split's id, warnings.

    Raises:
        FileNotFoundError: the manifest is missing (run validate first).
        SplitError: a class would have no training image, or a row's label does not match its path.
        PathEscapeError: a row's path leads outside ``data_dir``.
    """
    manifest_csv, out_dir = Path(manifest_csv), Path(out_dir)
    manifest = read_manifest(manifest_csv)
    usable = manifest[manifest["status"] == "ok"][LIST_COLUMNS].sort_values("path", ignore_index=True)
    check_rows(manifest[manifest["status"] == "ok"], manifest_csv, Path(data_dir))
    usable["side"] = assign(usable, params)

    counts = {s: usable[usable["side"] == s].groupby("label").size().to_dict() for s in SPLITS}
    classes = sorted(usable["label"].unique())
    no_train = [c for c in classes if not counts["train"].get(c)]
    if no_train:
        raise SplitError(
            f"class(es) {no_train} got no training image with split.seed={params.seed}: add images to "
            "data/<class>/, or lower split.test_ratio / split.val_ratio in params.yaml"
        )
    warnings = [f"class '{c}' has no {s} image" for s in ("val", "test") for c in classes if not counts[s].get(c)]
    if params.val_ratio == 0:
        warnings = [w for w in warnings if " val " not in w]

    hashes = write_split_lists(out_dir, {side: usable[usable["side"] == side][LIST_COLUMNS] for side in SPLITS})
    report = SplitInfo(
        classes=classes,
        counts={s: {c: int(counts[s].get(c, 0)) for c in classes} for s in SPLITS},
        totals={s: int(sum(counts[s].values())) for s in SPLITS},
        sha256=hashes,
        # One id for the whole split: evaluate and promote compare models only on the same split.
        split_id=sha256_bytes("".join(hashes[f"{s}.csv"] for s in SPLITS).encode()),
        warnings=warnings,
    )
    report.write(out_dir)
    write_resolved(out_dir, params)
    return report
