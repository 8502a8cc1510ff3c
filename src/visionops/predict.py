"""Batch prediction: an image file or a folder of images → a CSV of the top-k labels with probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from visionops import serving
from visionops.files import atomic_write_text
from visionops.model import load_trained
from visionops.preprocess import model_input
from visionops.probe import is_hidden
from visionops.serving import ImageClassifier


def image_files(source: Path) -> list[Path]:
    """``source`` itself if it is a file, else every non-hidden file below it, sorted."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    return sorted(p for p in source.rglob("*") if p.is_file() and not is_hidden(p.relative_to(source)))


def predict(
    model: Path | str, source: Path, out_csv: Path | None = None, top_k: int = 3, batch_size: int = 64
) -> pd.DataFrame:
    """Predict every image under ``source``; files that cannot be decoded get an ``error`` instead.

    Args:
        model: a model.keras file (with classes.json beside it), its folder, or an MLflow model URI.
        source: an image file or a folder.
        out_csv: where to write the table; None only returns it.
        top_k: how many labels per image.
        batch_size: images per forward pass.

    Returns:
        One row per file: path, label_1, p_1, …, label_k, p_k, error.
    """
    classifier = ImageClassifier(*load_trained(model))  # the served model's code: the same answers as serving
    classes, size, side = classifier.info["classes"], classifier.info["image_size"], classifier.info["resize_side"]
    k = min(top_k, len(classes))
    files = image_files(source)
    rows: list[dict] = []
    for start in range(0, len(files), batch_size):
        chunk, arrays, ok_rows = files[start : start + batch_size], [], []
        for file in chunk:
            row = {"path": str(file), "error": ""}
            try:
                arrays.append(model_input(file.read_bytes(), side, size, str(file)))
                ok_rows.append(row)
            except (ValueError, OSError) as err:
                row["error"] = str(err)
            rows.append(row)
        if arrays:
            answers = serving.top_k(classifier.probabilities(np.stack(arrays)), classes, k)
            for row, answer in zip(ok_rows, answers, strict=True):
                row.update(answer)
    columns = ["path"] + [f"{x}_{r}" for r in range(1, k + 1) for x in ("label", "p")] + ["error"]
    table = pd.DataFrame(rows, columns=columns)
    if out_csv is not None:
        atomic_write_text(Path(out_csv), table.to_csv(index=False, lineterminator="\n"))
    return table
