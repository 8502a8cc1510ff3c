"""The evaluate stage: score the trained model on the test split (and an optional hold-out folder).

Writes metrics.json (a DVC metric), per_class.csv and predictions.csv (DVC plots), confusion_matrix.png,
params.json and errors/ (what the model gets wrong: gallery.png, gallery.html, misclassified.csv,
per_class_errors.csv); the scoring itself is :mod:`visionops.training.scoring`. A model is never scored on data labelled
with classes it does not know: that stops with both class sets named. The train stage's own model is then logged
into its training run (run.json beside it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from visionops.config import EvaluateParams, RuntimeParams
from visionops.contracts.results import TestMetrics, write_resolved
from visionops.files import image_files
from visionops.interfaces import check_labels
from visionops.tracking import record, registry, runs
from visionops.training.model import load_trained
from visionops.training.scoring import LabelledSet, score_set, score_split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage produced: metrics.json's content, and whether it reached the training run."""

    metrics: dict
    run_id: str | None = None
    warnings: list[str] = field(default_factory=list)


def holdout_files(root: Path) -> tuple[list[Path], list[str]]:
    """Image files of a class-per-folder hold-out set, with their labels (folder names); loose files are skipped.

    Raises:
        FileNotFoundError: ``root`` is not a folder (the message names evaluate.holdout_dir).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"evaluate.holdout_dir: {root} is not a folder")
    files = [p for p in image_files(root) if len(p.relative_to(root).parts) > 1]  # (loose files have no label)
    return files, [p.relative_to(root).parts[0] for p in files]


def evaluate(
    model_ref: Path | str,
    *,
    data_dir: Path,
    split_dir: Path,
    params: EvaluateParams,
    out_dir: Path,
    runtime: RuntimeParams | None = None,
) -> Evaluation:
    """Run the evaluate stage.

    Args:
        model_ref: model.keras (with classes.json beside it), the train stage's folder holding both, or a model URI
            (``models:/NAME@champion``).
        data_dir: the image root the split lists are relative to.
        split_dir: the split stage's output folder.
        params: the ``evaluate`` section of params.yaml.
        out_dir: the stage's output folder (``artifacts/evaluate``).
        runtime: the ``runtime`` section (the inference batch); None: its defaults.

    Returns:
        The metrics; and the run they were logged to when the model is the train stage's (run.json beside it).

    Raises:
        ClassMismatchError: the test split or the hold-out folder holds classes the model was not trained on.
    """
    started, out_dir = time.perf_counter(), Path(out_dir)
    with registry.local_model(model_ref) as (path, known):
        model, info = load_trained(path, known)
    batch = (runtime or RuntimeParams()).inference_batch_size
    name = str(model_ref)
    metrics = score_split(
        model, info, name, data_dir=data_dir, split_dir=split_dir, params=params, batch_size=batch, out_dir=out_dir
    )
    if params.holdout_dir:
        files, names = holdout_files(Path(params.holdout_dir))
        check_labels(names, info, f"model {model_ref}", data=f"evaluate.holdout_dir {params.holdout_dir}")
        rel = [p.relative_to(params.holdout_dir).as_posix() for p in files]
        holdout = LabelledSet(files, rel, names, f"hold-out {params.holdout_dir}")
        metrics["holdout"] = score_set(
            model, info, holdout, params=params, batch_size=batch, out_dir=out_dir / "holdout"
        )
    written = TestMetrics.from_dict(metrics)
    written.write(out_dir)
    write_resolved(out_dir, params)
    log.info("evaluate: model scored, outputs written in %.1f s", time.perf_counter() - started)  # (as in train)
    run_id, warnings = runs.log_into_training_run(
        model_ref, "the evaluation", lambda client, run: record.log_evaluation(client, run, out_dir)
    )
    return Evaluation(written.to_dict(), run_id, warnings)
