"""Batch prediction: an image file or a folder of images → a CSV of the top-k labels with probabilities.

Images go through the served model's own code (:class:`visionops.tracking.serving.ImageClassifier`), so ``visionops
predict`` and ``mlflow models serve`` give the same answers for the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from visionops.contracts.results import PREDICTIONS_FILE
from visionops.data.preprocess import model_input
from visionops.files import atomic_write_text, image_files
from visionops.progress import track
from visionops.tracking import registry, serving
from visionops.training.model import load_trained

FILE = PREDICTIONS_FILE  # (the name evaluate gives its own; these rows have no true label)


def predict(
    model_ref: Path | str, source: Path, out_dir: Path | None = None, *, top_k: int = 3, batch_size: int = 64
) -> pd.DataFrame:
    """Predict every image under ``source``; files that cannot be decoded get an ``error`` instead.

    Args:
        model_ref: a model.keras file (with classes.json beside it), its folder, or an MLflow model URI.
        source: an image file or a folder.
        out_dir: the folder to write predictions.csv into; None only returns the table.
        top_k: how many labels per image.
        batch_size: images per forward pass.

    Returns:
        One row per file: path, label_1, p_1, …, label_k, p_k, error.
    """
    with registry.local_model(model_ref) as (path, known):
        classifier = serving.ImageClassifier(*load_trained(path, known))
    info = classifier.info
    k = min(top_k, len(info.classes))
    files = image_files(source)
    rows: list[dict] = []
    starts = range(0, len(files), batch_size)
    for start in track(starts, len(starts), f"predicting {len(files)} images"):
        arrays, ok_rows = [], []
        for file in files[start : start + batch_size]:
            row = {"path": str(file), "error": ""}
            try:
                arrays.append(model_input(file.read_bytes(), info.resize_side, info.image_size, source=str(file)))
                ok_rows.append(row)
            except (ValueError, OSError) as err:
                row["error"] = str(err)
            rows.append(row)
        if arrays:
            answers = serving.top_k(classifier.probabilities(np.stack(arrays)), info.classes, k)
            for row, answer in zip(ok_rows, answers, strict=True):
                row.update(answer)
    columns = ["path"] + [f"{x}_{r}" for r in range(1, k + 1) for x in ("label", "p")] + ["error"]
    table = pd.DataFrame(rows, columns=columns)
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / FILE, table.to_csv(index=False, lineterminator="\n"))
    return table
