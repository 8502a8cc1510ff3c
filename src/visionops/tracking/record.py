"""What a finished stage logs into its run: params, history, datasets, tags, files and the served model."""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.dataset import Dataset
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from visionops.config import Params
from visionops.contracts.data import SplitInfo
from visionops.contracts.model import DEFAULT_TOP_K, MODEL_FILE, ModelInfo, WeightsUsed, model_file
from visionops.contracts.results import PER_CLASS_FILE, PREDICTIONS_FILE, RESOLVED_FILE, TestMetrics
from visionops.interfaces import check_model_file
from visionops.tracking.lineage import lineage

log = logging.getLogger(__name__)


LOGGED_TRAINING, LOGGED_EVALUATION = "visionops.logged.training", "visionops.logged.evaluation"
MODEL_URI_TAG = "visionops.model_uri"
EVALUATION = "evaluation"  # the run's folder of evaluate's files


def _rescored(split_id: str) -> str:
    return f"rescored/{split_id[:16]}"


def stored_predictions(client: MlflowClient, run_id: str, split_id: str, *, own: bool, dst: Path) -> Path | None:
    """A model's predictions on the test set of ``split_id``, from its run, downloaded under ``dst``; None when the
    run holds none. ``own``: the split the model was evaluated on (evaluate's files), else one it was re-scored on."""
    folder = EVALUATION if own else _rescored(split_id)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, f"{folder}/{PREDICTIONS_FILE}", str(dst)))
    except (mlflow.exceptions.MlflowException, OSError):  # (an older run, or another split: score the model again)
        return None


def keep_rescored(client: MlflowClient, run_id: str, split_id: str, *, predictions: Path) -> None:
    """Keep a re-scored model's predictions on ``split_id`` in its run, so later comparisons need no re-scoring."""
    client.log_artifact(run_id, str(predictions), _rescored(split_id))


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested params → ``{"train.finetune.epochs": "25", "augment.0.name": "HorizontalFlip", ...}``."""
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: str(value)}
    out: dict[str, str] = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def epoch_metric(key: str, value: float, step: int, *, start: int) -> Metric:
    """One epoch's point: step = the epoch on the run's one axis, timestamp derived from it (not the clock)."""
    return Metric(key, float(value), start + step * 1000, step)


def log_params_and_history(client: MlflowClient, run_id: str, params: Params, *, history: pd.DataFrame) -> None:
    """All resolved params, then every epoch's metrics on one step axis that the run does not hold yet.

    Epochs logged live (:func:`live_metrics`) are skipped, so after an outage only the missing points are added and
    none twice. The rest goes in batched calls (``log_batch`` splits them into the server's request limits).
    """
    flat = flatten(params.model_dump(mode="json", by_alias=True))
    client.log_batch(run_id, params=[Param(k, v) for k, v in sorted(flat.items())])
    start = client.get_run(run_id).info.start_time
    columns = [c for c in history.columns if c != "epoch"]
    logged = {c: {m.step for m in client.get_metric_history(run_id, c)} for c in columns}
    metrics = [
        epoch_metric(column, row[column], int(row["epoch"]), start=start)
        for row in history.to_dict("records")
        for column in columns
        if pd.notna(row[column]) and int(row["epoch"]) not in logged[column]
    ]
    client.log_batch(run_id, metrics=metrics)


def _log_datasets(root: Path, split_dir: Path) -> None:
    """The train / val / test lists as the active run's dataset inputs, each with its own digest (its list's hash)."""
    info = SplitInfo.read(split_dir)
    datasets: list[Dataset | None] = []
    contexts: list[str | None] = []
    for side, context in (("train", "train"), ("val", "validation"), ("test", "test")):
        frame = pd.read_csv(split_dir / f"{side}.csv")
        digest = info.sha256[f"{side}.csv"][:32]
        datasets.append(from_pandas(frame, source=str(root / "data"), name=f"data-{side}", digest=digest))
        contexts.append(context)
    _log_inputs(datasets, contexts)


def _log_inputs(datasets: list[Dataset | None], contexts: list[str | None], attempts: int = 5) -> None:
    """``mlflow.log_inputs`` into the active run, again when a concurrent run inserted the same dataset first.

    MLflow's SQL store looks each dataset up by (experiment, name, digest) and inserts the missing ones in one
    transaction, so runs logging the same split at once (a sweep's trials, trainings sharing a team server) can both
    find it missing, and the later insert fails on the unique key (PostgreSQL: ``duplicate key value violates unique
    constraint "dataset_pk"``; SQLite: ``UNIQUE constraint failed``): the run would lose its model and be left
    half-logged. The failed transaction wrote nothing, and a retry finds the dataset and only links it to the run.
    """
    for attempt in range(1, attempts + 1):
        try:
            mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=[None] * len(datasets))
            return
        except mlflow.exceptions.MlflowException as exc:
            if attempt == attempts or "unique constraint" not in str(exc).lower():
                raise
            log.info("dataset inputs raced another run's (%s); logging them again", exc.error_code)
            time.sleep(0.2 * attempt * (1 + random.random()))  # jitter: racing runs do not retry in lockstep


def log_training(
    client: MlflowClient, run_id: str, params: Params, *, root: Path, train_dir: Path, split_dir: Path
) -> str:
    """Log a finished training from the train and split stages' folders (and validate/ beside split's).

    Logs params, per-epoch metrics, dataset inputs, tags (weights used, task, device), the files a reviewer
    needs (params.yaml, dvc.lock, augmentation preview, curves, TensorBoard logs, GE Data Docs and summary)
    and the model, served by :mod:`visionops.tracking.serving`, with the class names and input size as metadata.

    Args:
        client: the tracking client; run_id: the run to log into; params: the resolved params.yaml.
        root: the project root (params.yaml, dvc.lock, data.dvc).
        train_dir: the train stage's folder (``visionops train --out``); split_dir: the split stage's.

    Returns:
        The logged model's URI (``models:/m-...``), also kept as the run's ``visionops.model_uri`` tag.

    Raises:
        DamagedModelError: model.keras is truncated or changed; nothing was logged (a damaged model is never
            registered: promote registers what this logs).
    """
    train_dir, split_dir = Path(train_dir), Path(split_dir)
    validate_dir = split_dir.parent / "validate"
    check_model_file(model_file(train_dir))  # first: nothing is logged for a run whose model is damaged
    history = pd.read_csv(train_dir / "history.csv")
    log_params_and_history(client, run_id, params, history=history)
    tags = lineage(root, split_dir)
    weights = WeightsUsed.read(train_dir)
    info = ModelInfo.read(train_dir)
    tags.update(
        {
            "weights.used": weights.used,
            "weights.requested": str(weights.requested),
            **{f"weights.{k}": v for k, v in weights.provenance().items()},
            "mlflow.note.content": run_description(weights, info),
            "task": info.task,
            "model": info.model,
            "device.gpu": str(info.gpu).lower(),
            "device.strategy": info.strategy,
            "device.replicas": str(info.replicas),
        }
    )
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    files = {
        root / "params.yaml": "config",
        root / "dvc.lock": "config",
        split_dir / SplitInfo.FILE: "split",
        validate_dir / "summary.json": "validation",
    }
    for path, folder in files.items():
        if path.is_file():
            client.log_artifact(run_id, str(path), folder)
    for name in ("augment_preview.png", "curves.png", "history.csv", WeightsUsed.FILE, ModelInfo.FILE, RESOLVED_FILE):
        client.log_artifact(run_id, str(train_dir / name), "train")
    folders = {train_dir / "tensorboard": "tensorboard", validate_dir / "data_docs": "validation/data_docs"}
    for source, target in folders.items():
        if source.is_dir():
            client.log_artifacts(run_id, str(source), target)
    with mlflow.start_run(run_id=run_id):
        _log_datasets(root, split_dir)
        model_uri = _log_classifier(train_dir, info)
        mlflow.set_tags({MODEL_URI_TAG: model_uri, LOGGED_TRAINING: "true"})
    return model_uri


def run_description(weights: WeightsUsed, info: ModelInfo) -> str:
    """The run's description (the first thing its page shows): what was trained from which initial weights."""
    what = f"{info.task} model, {info.model} at {info.image_size} px, {len(info.classes)} classes"
    if not weights.pretrained:
        why = f" ({weights.fallback_reason})" if weights.fallback_reason else " (train.weights: null)"
        return f"**Trained from RANDOM weights**{why}: no pretrained start. {what}."
    source = weights.source or weights.path
    return f"Fine-tuned from {weights.used} weights ({source}, sha256 `{str(weights.sha256)[:12]}`). {what}."


def _log_classifier(train_dir: Path, info: ModelInfo) -> str:
    """Log model.keras + classes.json as a pyfunc model served by visionops.tracking.serving; returns its models:/ URI.

    The model ships this package's code (``code_paths``), so the served model preprocesses images with the code
    it was trained with, in any environment that has the pip requirements. The signature has outputs and the
    ``top_k`` param but no input schema: the model takes encoded images *or* tensors, which no single MLflow input
    schema allows, so :mod:`visionops.tracking.serving` checks the input and decodes the base64 images itself.
    """
    import visionops

    k = min(DEFAULT_TOP_K, len(info.classes))
    columns = (("string", "label"), ("double", "p"))
    outputs: list[ColSpec | TensorSpec] = [
        ColSpec(kind, f"{name}_{rank}") for rank in range(1, k + 1) for kind, name in columns
    ]
    signature = ModelSignature(outputs=Schema(outputs), params=ParamSchema([ParamSpec("top_k", "long", k)]))
    with tempfile.TemporaryDirectory(prefix="visionops-log-") as tmp:
        data, code = Path(tmp) / "classifier", Path(tmp) / "visionops"
        data.mkdir()
        for name in (MODEL_FILE, ModelInfo.FILE):
            shutil.copy2(train_dir / name, data / name)
        shutil.copytree(Path(visionops.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
        requirements = [
            f"keras=={version('keras')}",
            f"tensorflow=={_tensorflow_version()}",
            f"opencv-python-headless=={version('opencv-python-headless')}",
            f"numpy=={version('numpy')}",
        ]
        with warnings.catch_warnings():
            # No input example: one would make MLflow load the model and predict in the train process; the model
            # card and README show the requests. (MLflow warns about the missing example on every log.)
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            model_info = mlflow.pyfunc.log_model(
                name="model",
                loader_module="visionops.tracking.serving",
                data_path=str(data),
                code_paths=[str(code)],
                signature=signature,
                pip_requirements=requirements,
                metadata=info.metadata(),
            )
    return model_info.model_uri


def _tensorflow_version() -> str:
    """The installed TensorFlow, whichever wheel brought it (tensorflow-cpu or tensorflow[and-cuda])."""
    try:
        return version("tensorflow-cpu")
    except PackageNotFoundError:
        return version("tensorflow")


def log_evaluation(client: MlflowClient, run_id: str, eval_dir: Path) -> None:
    """Log evaluate's metrics (prefixed ``test_``, hold-out ``holdout_``), reports and error gallery into the run."""
    metrics = TestMetrics.read(eval_dir)
    flat: dict[str, float] = {f"test_{k}": v for k, v in metrics.numbers().items()}
    flat.update({f"holdout_{k}": v for k, v in (metrics.holdout or {}).items() if isinstance(v, int | float)})
    start = client.get_run(run_id).info.start_time
    client.log_batch(run_id, metrics=[Metric(k, float(v), start, 0) for k, v in flat.items() if v is not None])
    for name in (TestMetrics.FILE, PER_CLASS_FILE, PREDICTIONS_FILE, "confusion_matrix.png"):
        client.log_artifact(run_id, str(eval_dir / name), EVALUATION)
    if (eval_dir / "errors").is_dir():  # the misclassified gallery (page, PNG, tables)
        client.log_artifacts(run_id, str(eval_dir / "errors"), f"{EVALUATION}/errors")
    client.set_tag(run_id, "evaluated_split_id", metrics.split_id)
    client.set_tag(run_id, LOGGED_EVALUATION, "true")
    client.set_terminated(run_id, "FINISHED")


def log_export(client: MlflowClient, run_id: str, export_dir: Path) -> None:
    """Log the export stage's files (SavedModel, TFLite files, labels.txt, export.json) into the run, under export/."""
    client.log_artifacts(run_id, str(export_dir), "export")
