"""Batch prediction: an image file or a folder of images → a CSV of the top-k labels with probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from visionops.dataset import center_crop, load_square
from visionops.files import atomic_write_text
from visionops.model import load_trained
from visionops.probe import is_hidden


def image_files(source: Path) -> list[Path]:
    """``source`` itself if it is a file, else every non-hidden file below it, sorted."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    return sorted(p for p in source.rglob("*") if p.is_file() and not is_hidden(p.relative_to(source)))


def predict(
    model: Path, source: Path, out_csv: Path | None = None, top_k: int = 3, batch_size: int = 64
) -> pd.DataFrame:
    """Predict every image under ``source``; files that cannot be decoded get an ``error`` instead.

    Args:
        model: a model.keras file (with classes.json beside it) or its folder.
        source: an image file or a folder.
        out_csv: where to write the table; None only returns it.
        top_k: how many labels per image.
        batch_size: images per forward pass.

    Returns:
        One row per file: path, label_1, p_1, …, label_k, p_k, error.
    """
    keras_model, info = load_trained(model)
    classes, size, side = info["classes"], info["image_size"], info["resize_side"]
    k = min(top_k, len(classes))
    files = image_files(source)
    rows: list[dict] = []
    for start in range(0, len(files), batch_size):
        chunk, arrays = files[start : start + batch_size], []
        for file in chunk:
            try:
                arrays.append(center_crop(load_square(file, side), size))
                rows.append({"path": str(file), "error": ""})
            except (ValueError, OSError) as err:
                rows.append({"path": str(file), "error": str(err)})
        if not arrays:
            continue
        probs = keras_model.predict(np.stack(arrays).astype(np.float32), verbose=0)
        ok_rows = [r for r in rows[-len(chunk) :] if not r["error"]]
        for row, p in zip(ok_rows, probs, strict=True):
            for rank, c in enumerate(np.argsort(p)[::-1][:k], start=1):
                row[f"label_{rank}"], row[f"p_{rank}"] = classes[c], round(float(p[c]), 6)
    columns = ["path"] + [f"{x}_{r}" for r in range(1, k + 1) for x in ("label", "p")] + ["error"]
    table = pd.DataFrame(rows, columns=columns)
    if out_csv is not None:
        atomic_write_text(Path(out_csv), table.to_csv(index=False, lineterminator="\n"))
    return table
