"""Figures of the stages' results: confusion matrix and learning curves as PNG, and the page `dvc plots` fills."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str) -> bytes:
    """A row-normalised confusion matrix as PNG bytes."""
    side = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.5 else "black")
    return _png(fig)


def plot_history(history: pd.DataFrame) -> bytes:
    """Loss and accuracy per epoch, both fine-tuning stages on one axis, the stage boundary marked."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for column in (metric, f"val_{metric}"):
            if column in history:
                ax.plot(history["epoch"], history[column], marker=".", label=column)
        second = history.loc[history["stage"] == 2, "epoch"]
        if len(second) and len(second) < len(history):
            ax.axvline(second.iloc[0] - 0.5, color="grey", linestyle="--", label="stage 2 (fine-tune)")
        ax.set(xlabel="epoch", title=metric)
        ax.legend()
    return _png(fig)


def plot_thumbnails(rows: list[tuple[str, list[tuple[np.ndarray, str]]]], title: str) -> bytes:
    """A grid of captioned images, one row per group (its name at the left), as PNG bytes.

    Args:
        rows: (group name, [(RGB uint8 image, caption), ...]) per row.
        title: the figure's title.
    """
    if not rows:
        fig, ax = plt.subplots(figsize=(5, 1.2), dpi=100)
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: none", ha="center", va="center")
        return _png(fig)
    columns = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.6 * columns + 0.6, 1.95 * len(rows)), dpi=100, squeeze=False
    )
    for r, (name, images) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images):
                ax.axis("off")
                continue
            ax.imshow(images[c][0])
            ax.set_xlabel(images[c][1], fontsize=7)
        axes[r][0].set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


VEGA_LITE = "5.21"  # DVC's plot templates are Vega-Lite 5 specifications
DVC_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <script>
BUNDLE
    </script>
    <style>table { border-spacing: 15px; }</style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def dvc_plots_template() -> str:
    """The HTML template of ``dvc plots show`` and ``dvc plots diff`` with Vega, Vega-Lite and vega-embed inlined.

    DVC's own page loads them from a CDN, so offline it draws no curve at all. The libraries come from the locked
    vl-convert-python package (its JavaScript bundle sets ``window.vegaEmbed``, which DVC's plot scripts call), so a
    page made on a machine without network draws every plot. DVC fills ``{plot_divs}`` and ``{refresh_tag}``; it
    would also fill ``{scripts}`` with the CDN's tags, which this template leaves out.
    """
    import vl_convert

    bundle = vl_convert.javascript_bundle("window.vegaEmbed = vegaEmbed;", vl_version=VEGA_LITE)
    if any(p in bundle for p in ("{plot_divs}", "{scripts}", "{refresh_tag}")):  # (DVC would fill them in the code)
        raise RuntimeError("the Vega bundle holds one of DVC's template placeholders: it cannot be inlined")
    return DVC_PAGE.replace("BUNDLE", bundle)
