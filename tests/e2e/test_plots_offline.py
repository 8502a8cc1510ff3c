"""`dvc plots show` as a user without network sees it: every plot dvc.yaml declares drawn once, in a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from browser import needs_chromium, rendered
from helpers import cli, run

from visionops.contracts.results import write_per_class
from visionops.training.plots import plot_confusion

pytestmark = [needs_chromium]
# The Vega mark each declared plot draws its data with: curves for the learning curves, rectangles for bars and cells.
MARKS = {"loss": "mark-line", "accuracy": "mark-line", "per_class_f1": "mark-rect", "confusion": "mark-rect"}


def _results(project: Path) -> None:
    """What train and evaluate leave for the plots: a learning curve, per-class scores, predictions, a PNG."""
    train, evaluate = project / "artifacts/train", project / "artifacts/evaluate"
    train.mkdir(parents=True)
    evaluate.mkdir(parents=True)
    epochs = np.arange(6)
    pd.DataFrame(
        {"epoch": epochs, "stage": [1, 1, 1, 2, 2, 2], "loss": 1 / (epochs + 1), "accuracy": 0.5 + epochs / 12}
    ).assign(val_loss=lambda f: f["loss"] * 1.1, val_accuracy=lambda f: f["accuracy"] - 0.02).to_csv(
        train / "history.csv", index=False
    )
    classes = ["circle", "square", "star"]
    table = pd.DataFrame({"class": classes, "precision": 0.9, "recall": 0.8, "f1": [0.85, 0.8, 0.7], "support": 5})
    write_per_class(evaluate, table)
    labels = [c for c in classes for _ in range(5)]
    predicted = labels[1:] + labels[:1]
    pd.DataFrame({"path": [f"{i}.jpg" for i in range(15)], "label": labels, "predicted": predicted}).to_csv(
        evaluate / "predictions.csv", index=False
    )
    (evaluate / "confusion_matrix.png").write_bytes(plot_confusion(np.eye(3), classes, "confusion"))


def _segments(dom: str, ids: list[str]) -> dict[str, str]:
    """Each plot's part of the page: from its div to the next plot's."""
    starts = sorted((dom.index(f'<div id="{i}"'), i) for i in ids)
    return {i: dom[at : (starts[n + 1][0] if n + 1 < len(starts) else len(dom))] for n, (at, i) in enumerate(starts)}


def test_dvc_plots_show_draws_every_declared_plot_once_without_network(project_copy: Path, tmp_path: Path) -> None:
    _results(project_copy)
    run(cli("plots-template"), cwd=project_copy)  # what `./run.sh setup` runs once per checkout
    run(["dvc", "plots", "show", "-o", "page"], cwd=project_copy)
    page = project_copy / "page/index.html"
    assert not re.search(r"<script[^>]+src=", page.read_text()), "the page loads no script: Vega is inlined"

    declared = {
        k: v
        for p in yaml.safe_load((project_copy / "dvc.yaml").read_text())["plots"]
        for k, v in (p.items() if isinstance(p, dict) else [(p, None)])
    }
    assert set(declared) == {*MARKS, "artifacts/evaluate/confusion_matrix.png"}, "a new plot needs its mark here"
    dom = rendered(page.as_uri(), tmp_path / "profile", offline=True)
    ids = re.findall(r'<div id="([^"]+)"', dom)
    assert sorted(ids) == sorted([*MARKS, "artifacts_evaluate_confusion_matrix_png"]), "each plot drawn once"
    segments = _segments(dom, ids)
    for plot, mark in MARKS.items():
        drawn = re.findall(
            rf'<g class="{mark} role-mark[^"]*"[^>]*><path aria-label="([^"]*)"[^>]*\bd="M', segments[plot]
        )
        assert drawn, f"{plot}: no {mark} drawn"
        if mark == "mark-line":  # one curve per column dvc.yaml names, each a path with points
            fields = next(iter(declared[plot]["y"].values()))
            assert {f"field: {f}" for f in fields} <= {re.search(r"field: \w+", d)[0] for d in drawn}, drawn
    assert dom.count('<img src="static/') == 1, "the confusion matrix PNG, once"
