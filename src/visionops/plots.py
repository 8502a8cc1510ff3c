"""PNG figures of the stages' results: confusion matrix, learning curves."""

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
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=title)  # fmt: skip
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
