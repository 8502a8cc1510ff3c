"""Error analysis: what a model gets wrong, as a PNG gallery, an HTML page and per-class tables.

The misclassified images of a scored set are grouped by true class and shown worst first: the lowest
probability given to the true class leads (the most confident mistakes). Each thumbnail is the image as the
model saw it (centre crop; rotated, for the orientation task) with its true and predicted class and both
probabilities. The HTML page embeds its thumbnails, so it opens as one file from the MLflow UI's artifact view.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from visionops.files import atomic_write_bytes, atomic_write_text
from visionops.training.plots import plot_thumbnails

THUMB = 112  # side of a shown thumbnail, px: small images are enlarged (nearest), large ones reduced


def misclassified(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The wrong rows of evaluate's predictions table, with ``p_true``, by true class (class order), worst first.

    Args:
        predictions: one row per example: ``label``, ``predicted``, ``confidence`` and ``p_<class>`` columns.
        classes: the model's classes, in output order.

    Returns:
        The wrong rows (their index kept: the example's position) plus ``p_true``, the probability of the true class.
    """
    probs = predictions[[f"p_{c}" for c in classes]].to_numpy()
    true_index = pd.Categorical(predictions["label"], categories=classes).codes
    wrong = predictions.assign(p_true=probs[np.arange(len(predictions)), true_index], order=true_index)
    wrong = wrong[wrong["label"] != wrong["predicted"]]
    return wrong.sort_values(["order", "p_true"], kind="stable").drop(columns="order")


def per_class_errors(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per true class: examples, errors, error rate, and the class it is most often mistaken for (and how often)."""
    rows = []
    for name in classes:
        mine = predictions[predictions["label"] == name]
        wrong = mine[mine["predicted"] != name]
        top = wrong["predicted"].value_counts()
        rows.append(
            {
                "class": name,
                "examples": len(mine),
                "errors": len(wrong),
                "error_rate": round(len(wrong) / len(mine), 6) if len(mine) else 0.0,
                "most_mistaken_for": top.index[0] if len(top) else "",
                "times": int(top.iloc[0]) if len(top) else 0,
            }
        )
    return pd.DataFrame(rows)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    interpolation = cv2.INTER_NEAREST if image.shape[0] < THUMB else cv2.INTER_AREA
    return cv2.resize(np.ascontiguousarray(image, dtype=np.uint8), (THUMB, THUMB), interpolation=interpolation)


def _caption(row: pd.Series) -> str:
    return f"pred {row['predicted']} {row['confidence']:.2f}\ntrue {row['label']} {row['p_true']:.2f}"


def gallery_html(shown: pd.DataFrame, thumbs: list[np.ndarray], table: pd.DataFrame, *, title: str) -> str:
    """A self-contained page: the per-class table, then each class's misclassified thumbnails, worst first."""
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font:14px sans-serif;margin:16px}figure{display:inline-block;margin:4px;width:"
        f"{THUMB + 8}px;vertical-align:top}}figcaption{{font-size:11px;word-break:break-all}}"
        "td,th{padding:2px 8px;text-align:left}</style>",
        f"<h1>{html.escape(title)}</h1>",
        table.to_html(index=False, escape=True, border=0),
    ]
    if shown.empty:
        parts.append("<p>No misclassified images.</p>")
    for label, group in shown.groupby("label", sort=False):
        parts.append(f"<h2>true class {html.escape(str(label))}: {len(group)} shown, worst first</h2>")
        for (_, row), thumb in zip(group.iterrows(), [thumbs[i] for i in group["slot"]], strict=True):
            png = base64.b64encode(cv2.imencode(".png", cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR))[1].tobytes())
            caption = html.escape(f"{row['path']}{_rotation(row)} — {_caption(row)}").replace("\n", "<br>")
            parts.append(
                f"<figure><img src='data:image/png;base64,{png.decode()}' width={THUMB} height={THUMB} "
                f"alt='{html.escape(str(row['path']))}'><figcaption>{caption}</figcaption></figure>"
            )
    return "\n".join(parts) + "\n"


def _rotation(row: pd.Series) -> str:
    return f" (rotated {row['rotation']}°)" if "rotation" in row else ""


def write_gallery(
    out_dir: Path,
    predictions: pd.DataFrame,
    classes: list[str],
    *,
    image: Callable[[int], np.ndarray],
    per_class: int,
    title: str,
) -> dict:
    """Write ``out_dir``/gallery.png, gallery.html, misclassified.csv and per_class_errors.csv.

    Args:
        out_dir: the folder (``artifacts/evaluate/errors``).
        predictions: evaluate's predictions table; its row ``i`` is example ``i``.
        classes: the model's classes, in output order.
        image: example index → the RGB uint8 image the model saw.
        per_class: how many misclassified images of each true class to show (all are listed in the CSV).
        title: what was scored (``test split``), shown in the figures.

    Returns:
        ``{"misclassified": N, "shown": M}``.
    """
    wrong = misclassified(predictions, classes)
    shown = wrong.groupby("label", sort=False).head(per_class).copy()
    shown["slot"] = range(len(shown))
    thumbs = [_thumbnail(image(int(i))) for i in shown.index]
    table = per_class_errors(predictions, classes)
    columns = [c for c in ("path", "rotation", "label", "predicted", "confidence", "p_true") if c in wrong]
    atomic_write_text(out_dir / "misclassified.csv", wrong[columns].to_csv(index=False, lineterminator="\n"))
    atomic_write_text(out_dir / "per_class_errors.csv", table.to_csv(index=False, lineterminator="\n"))
    rows = [
        (str(label), [(thumbs[s], _caption(r)) for s, (_, r) in zip(g["slot"], g.iterrows(), strict=True)])
        for label, g in shown.groupby("label", sort=False)
    ]
    atomic_write_bytes(out_dir / "gallery.png", plot_thumbnails(rows, f"misclassified, {title} (worst first)"))
    atomic_write_text(out_dir / "gallery.html", gallery_html(shown, thumbs, table, title=f"Misclassified: {title}"))
    return {"misclassified": len(wrong), "shown": len(shown)}
