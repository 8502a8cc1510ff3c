"""MLflow runs: where to log, run lineage, and logging the stages' outputs (the registry is :mod:`visionops.registry`).

The tracking URI comes from MLFLOW_TRACKING_URI; without it, the project's own store is used
(``sqlite:///<project>/mlflow.db`` with artifacts in ``<project>/mlartifacts``), which ``visionops ui``
serves on 127.0.0.1. Every stage writes its files locally first and logs them afterwards, so an MLflow outage
never loses a trained model: ``visionops log-run`` logs whatever is missing once the server is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import random
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.data.dataset import Dataset
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from visionops.config import Params, TrainParams
from visionops.contracts import DEFAULT_TOP_K, ModelInfo, RunInfo, SplitInfo, check_model_file, is_model_uri
from visionops.errors import ServiceUnavailable, UserError
from visionops.files import atomic_write_text, project_root, project_store, store_root

log = logging.getLogger(__name__)

# MLflow retries a failed request 7 times with exponential backoff (minutes in all) before giving up; the stages
# save everything locally first, so a few quick retries are enough and an outage costs seconds, not minutes.
# A value exported by the user wins.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
# A server proxying an S3 artifact store (`--serve-artifacts`, the team stack) tells MLflow 3 clients to download
# (and upload large files) straight from S3 with presigned URLs. Those URLs name the server's own S3 endpoint
# (compose: http://minio:9000), which laptops and workers on other hosts cannot resolve, and the stack promises that
# clients need nothing but MLFLOW_TRACKING_URI: every transfer goes through the tracking server. A value exported by
# the user wins.
os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "false")

LOGGED_TRAINING, LOGGED_EVALUATION = "visionops.logged.training", "visionops.logged.evaluation"
MODEL_URI_TAG = "visionops.model_uri"
PACKAGES = (
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "mlflow",
    "dvc",
    "great-expectations",
    "albumentations",
    "opencv-python-headless",
    "prefect",
)


class TrackingUnavailable(ServiceUnavailable):
    """The tracking server cannot be reached; the message names it and says what to do."""


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, or the project's own store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or project_store(root)


def shown_uri(uri: str) -> str:
    """``uri`` without the ``user:password@`` part, for messages and files (credentials belong in env variables)."""
    parts = urllib.parse.urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def connect(root: Path | None = None, consequence: str = "nothing was changed") -> MlflowClient:
    """Point MLflow at the tracking URI and check that a server answers, before any work starts.

    One /health request with a 10 s timeout, no retries: a refused connection fails in well under a second,
    instead of after MLflow's retries, and before the caller imports TensorFlow or trains anything.

    Args:
        root: where to look for the project (its own store); default: the working directory.
        consequence: what the failure means for the caller's work, appended to the message.

    Raises:
        TrackingUnavailable: an http(s) server does not answer its /health endpoint within 10 s.
    """
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
                response.read()
        except OSError as err:
            raise TrackingUnavailable(
                f"MLflow tracking server {shown_uri(uri)} (set by MLFLOW_TRACKING_URI) is unreachable: "
                f"{getattr(err, 'reason', err)}. Start it (or fix the URI), or unset MLFLOW_TRACKING_URI to use the "
                f"project's own store ({project_store(root)}); {consequence}."
            ) from None
    return MlflowClient(uri)


# The MLflow 3 UI opens an experiment in its GenAI view (traces, an assistant panel) unless it is marked as model
# training; these experiments hold training runs, so the UI should open on their runs, metrics and models.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client: MlflowClient, name: str, root: Path | None = None) -> str:
    """The id of experiment ``name``, created on first use (artifacts beside the project's own store).

    The experiment is marked as model training (:data:`EXPERIMENT_KIND`), also an older one that has no kind yet.
    """
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if client.tracking_uri == project_store(root):  # (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI)
            location = (store_root(root) / "mlartifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent run
            found = client.get_experiment_by_name(name)
            assert found is not None, name
    for key, value in EXPERIMENT_KIND.items():
        if key not in found.tags:  # (a kind the user chose stays)
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def lineage(root: Path, split_dir: Path) -> dict[str, str]:
    """Tags that say where a run came from: code, data, split, machine, package versions."""
    data_dvc = root / "data.dvc"
    data_hash = yaml.safe_load(data_dvc.read_text())["outs"][0]["md5"] if data_dvc.is_file() else ""
    tags = {
        "git.commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "git.dirty": str(bool(_git(root, "status", "--porcelain", "--untracked-files=no"))).lower(),
        "data.dvc_md5": data_hash,
        "split_id": SplitInfo.read(split_dir).split_id,
        "hardware.platform": platform.platform(),
        "hardware.cpus": str(os.cpu_count()),
    }
    for package in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            tags[f"version.{package}"] = version(package)
    return tags


def default_run_name(params: TrainParams, split_dir: Path) -> str:
    """``<model>-<size>px-<task>-<weights>-<commit>``: what a run is, readable in the runs table."""
    weights = {None: "scratch", "imagenet": "imagenet"}.get(params.weights, "file")
    commit = lineage(project_root(), split_dir)["git.commit"][:7]
    return f"{params.model}-{params.size}px-{params.task}-{weights}-{commit}"


RUN_TAGS_ENV = "VISIONOPS_RUN_TAGS"  # JSON tags the run also gets: a sweep makes its trials its children this way
SWEEP_TAG, TRIAL_TAG, EXPERIMENT_TAG = "visionops.sweep", "visionops.sweep.trial", "visionops.dvc_experiment"


def extra_run_tags() -> dict[str, str]:
    """The tags ``VISIONOPS_RUN_TAGS`` asks for (JSON object), e.g. ``{"mlflow.parentRunId": "..."}``.

    Raises:
        UserError: the variable is set but not a JSON object of strings.
    """
    raw = os.environ.get(RUN_TAGS_ENV)
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
        assert isinstance(tags, dict)
    except (ValueError, AssertionError):
        raise UserError(f'{RUN_TAGS_ENV}={raw!r} is not a JSON object; write it as {{"key": "value"}}') from None
    return {str(k): str(v) for k, v in tags.items()}


def start_run(client: MlflowClient, experiment: str, run_name: str, tags: dict[str, str], resume_file: Path) -> RunInfo:
    """Start a run, or continue the one a killed training left in ``resume_file``; it also gets
    :func:`extra_run_tags`.

    Returns:
        What run.json holds.
    """
    tags = {**tags, **extra_run_tags()}
    run = None
    if resume_file.is_file():
        previous = client.get_run(resume_file.read_text().strip())
        if previous.info.status in ("RUNNING", "FAILED"):
            client.update_run(previous.info.run_id, status="RUNNING")
            client.log_batch(previous.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            run = previous
    if run is None:
        run = client.create_run(experiment_id(client, experiment), run_name=run_name, tags=tags)
        atomic_write_text(resume_file, run.info.run_id)  # a kill mid-write must not leave an empty run id
    return RunInfo(run.info.run_id, run.info.run_name, run.info.experiment_id, shown_uri(client.tracking_uri))


def start_sweep(client: MlflowClient, experiment: str, sweep_id: str, settings: list[str], trials: int) -> str:
    """The parent run of a sweep (its trials' runs become its children); returns its id."""
    tags = {SWEEP_TAG: sweep_id, "visionops.sweep.role": "parent"}
    run = client.create_run(experiment_id(client, experiment), run_name=sweep_id, tags=tags)
    client.log_batch(
        run.info.run_id, params=[Param("sweep.settings", " ".join(settings)), Param("sweep.trials", str(trials))]
    )
    return run.info.run_id


def sweep_children(client: MlflowClient, parent_id: str) -> dict[int, Any]:
    """The runs of a sweep's trials, by trial number (a trial restored from DVC's run cache has none)."""
    parent = client.get_run(parent_id)
    found = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000
    )
    return {int(r.data.tags[TRIAL_TAG]): r for r in found if TRIAL_TAG in r.data.tags}


def finish_sweep(client: MlflowClient, parent_id: str, rows: list[dict[str, Any]], summary: str, best: dict) -> None:
    """Log the sweep's table of trials (an MLflow table and markdown), its best trial and decision; end the run."""
    with tempfile.TemporaryDirectory(prefix="visionops-sweep-") as tmp:
        (Path(tmp) / "sweep.md").write_text(summary + "\n", encoding="utf-8")
        (Path(tmp) / "trials.json").write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")
        client.log_artifacts(parent_id, tmp, "sweep")
    tags = [RunTag(f"visionops.sweep.best.{k}", str(v)) for k, v in best.items()]
    metrics = [Metric(f"best_{k}", float(v), 0, 0) for k, v in best.items() if isinstance(v, int | float)]
    client.log_batch(parent_id, metrics=metrics, tags=tags)
    client.set_terminated(parent_id, "FINISHED")


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


def _epoch_metric(key: str, value: float, step: int, start: int) -> Metric:
    """One epoch's point: step = the epoch on the run's one axis, timestamp derived from it (not the clock)."""
    return Metric(key, float(value), start + step * 1000, step)


def live_metrics(client: MlflowClient, run_id: str) -> Callable[[int, dict[str, float]], None]:
    """A listener logging each finished epoch's metrics at once, so the charts of a running training move.

    A failure (the server went away) is logged once as a warning and later epochs are not sent: training goes on,
    and :func:`log_params_and_history` (``visionops log-run`` after an outage) adds the points that are missing.
    """
    failed, start = list[Exception](), list[int]()

    def log_epoch(step: int, values: dict[str, float]) -> None:
        if failed:
            return
        try:
            start[:] = start or [client.get_run(run_id).info.start_time]
            client.log_batch(run_id, metrics=[_epoch_metric(k, v, step, start[0]) for k, v in values.items()])
        except Exception as exc:  # noqa: BLE001 - any tracking failure: training must go on; log-run fills in later
            failed.append(exc)
            log.warning("live metrics stopped at epoch %d (%s); the run gets them when the training ends", step, exc)

    return log_epoch


@contextlib.contextmanager
def system_metrics(run_id: str, interval_s: float = 10.0) -> Iterator[None]:
    """Log the machine's CPU, memory, disk, network (and GPU, when present) use into the run while the block runs."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def log_params_and_history(client: MlflowClient, run_id: str, params: Params, history: pd.DataFrame) -> None:
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
        _epoch_metric(column, row[column], int(row["epoch"]), start)
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
    client: MlflowClient, run_id: str, params: Params, root: Path, train_dir: Path, split_dir: Path
) -> str:
    """Log a finished training from the train and split stages' folders (and validate/ beside split's).

    Logs params, per-epoch metrics, dataset inputs, tags (weights used, task, device), the files a reviewer
    needs (params.yaml, dvc.lock, augmentation preview, curves, TensorBoard logs, GE Data Docs and summary)
    and the model, served by :mod:`visionops.serving`, with the class names and input size as metadata.

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
    check_model_file(train_dir / "model.keras")  # first: nothing is logged for a run whose model is damaged
    history = pd.read_csv(train_dir / "history.csv")
    log_params_and_history(client, run_id, params, history)
    tags = lineage(root, split_dir)
    weights = json.loads((train_dir / "weights.json").read_text())
    info = ModelInfo.read(train_dir)
    tags.update(
        {
            "weights.used": weights["used"],
            "weights.requested": str(weights["requested"]),
            **{f"weights.{k}": str(weights[k]) for k in WEIGHTS_PROVENANCE if weights.get(k)},
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
        split_dir / "split.json": "split",
        validate_dir / "summary.json": "validation",
    }
    for path, folder in files.items():
        if path.is_file():
            client.log_artifact(run_id, str(path), folder)
    for name in ("augment_preview.png", "curves.png", "history.csv", "weights.json", "classes.json", "params.json"):
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


WEIGHTS_PROVENANCE = ("source", "package", "package_version", "sha256", "format", "licence")  # of weights.json


def run_description(weights: dict, info: ModelInfo) -> str:
    """The run's description (the first thing its page shows): what was trained from which initial weights."""
    what = f"{info.task} model, {info.model} at {info.image_size} px, {len(info.classes)} classes"
    if weights["used"] == "random":
        why = f" ({weights['fallback_reason']})" if weights.get("fallback_reason") else " (train.weights: null)"
        return f"**Trained from RANDOM weights**{why}: no pretrained start. {what}."
    source = weights.get("source") or weights.get("path")
    return f"Fine-tuned from {weights['used']} weights ({source}, sha256 `{str(weights.get('sha256'))[:12]}`). {what}."


def _log_classifier(train_dir: Path, info: ModelInfo) -> str:
    """Log model.keras + classes.json as a pyfunc model served by visionops.serving; returns its models:/ URI.

    The model ships this package's code (``code_paths``), so the served model preprocesses images with the code
    it was trained with, in any environment that has the pip requirements. The signature has outputs and the
    ``top_k`` param but no input schema: the model takes encoded images *or* tensors, which no single MLflow input
    schema allows, so :mod:`visionops.serving` checks the input and decodes the base64 images itself.
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
        for name in ("model.keras", ModelInfo.FILE):
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
                loader_module="visionops.serving",
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
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    flat = {f"test_{k}": v for k, v in metrics.items() if isinstance(v, int | float)}
    flat.update({f"holdout_{k}": v for k, v in metrics.get("holdout", {}).items() if isinstance(v, int | float)})
    start = client.get_run(run_id).info.start_time
    client.log_batch(run_id, metrics=[Metric(k, float(v), start, 0) for k, v in flat.items() if v is not None])
    for name in ("metrics.json", "per_class.csv", "predictions.csv", "confusion_matrix.png"):
        client.log_artifact(run_id, str(eval_dir / name), "evaluation")
    if (eval_dir / "errors").is_dir():  # the misclassified gallery (page, PNG, tables)
        client.log_artifacts(run_id, str(eval_dir / "errors"), "evaluation/errors")
    client.set_tag(run_id, "evaluated_split_id", metrics["split_id"])
    client.set_tag(run_id, LOGGED_EVALUATION, "true")
    client.set_terminated(run_id, "FINISHED")


def log_export(client: MlflowClient, run_id: str, export_dir: Path) -> None:
    """Log the export stage's files (SavedModel, TFLite files, labels.txt, export.json) into the run, under export/."""
    client.log_artifacts(run_id, str(export_dir), "export")


def logged_or_warning(what: str, log: Callable[[], Any]) -> str | None:
    """Run ``log``; on any failure keep the stage's result (it is on disk) and return how to log it later.

    Returns:
        None when logged, else a one-line warning naming what was not logged and the command that logs it.
    """
    try:
        log()
    except Exception as exc:  # noqa: BLE001 - any tracking failure: the files are safe, logging can be redone
        return (
            f"logging {what} to MLflow failed ({exc}). The results are saved under artifacts/; run "
            "`visionops log-run` once the tracking server is back."
        )
    return None


def log_into_training_run(
    model_ref: Path | str, what: str, log: Callable[[MlflowClient, str], None]
) -> tuple[str | None, list[str]]:
    """When ``model_ref`` is a model trained here (run.json beside it), ``log(client, run_id)`` into its run.

    Evaluate and export log this way; a registered model (a URI) or a loose model file has no run to log into.

    Returns:
        The run id (None: no run), and the warning when logging failed (the files are saved; ``visionops log-run``).
    """
    folder = Path(model_ref) if Path(model_ref).is_dir() else Path(model_ref).parent
    if is_model_uri(model_ref) or not (folder / RunInfo.FILE).is_file():
        return None, []
    run = RunInfo.read(folder)
    warning = logged_or_warning(what, lambda: log(connect(), run.run_id))
    return run.run_id, [warning] if warning else []


def log_missing(client: MlflowClient, params: Params, root: Path, artifacts: Path) -> tuple[str, list[str]]:
    """Log what an outage kept from the run in ``artifacts/train/run.json``: its training, its evaluation, or both.

    Returns:
        The run's id, and what was logged now (``training``, ``evaluation``; empty when nothing was missing).

    Raises:
        FileNotFoundError: train has not run.
        TrackingUnavailable: the run is not in this tracking store.
    """
    run = RunInfo.read(artifacts / "train")
    try:
        tags = client.get_run(run.run_id).data.tags
    except Exception:  # noqa: BLE001 - MlflowException or a transport error: say where the run was
        raise TrackingUnavailable(
            f"run {run.run_id} is not in {shown_uri(client.tracking_uri)}; it was started in {run.tracking_uri}: "
            "set MLFLOW_TRACKING_URI to that server."
        ) from None
    done = []
    if LOGGED_TRAINING not in tags:
        log_training(client, run.run_id, params, root, artifacts / "train", artifacts / "split")
        done.append("training")
    if (artifacts / "evaluate" / "metrics.json").is_file() and LOGGED_EVALUATION not in tags:
        log_evaluation(client, run.run_id, artifacts / "evaluate")
        done.append("evaluation")
    return run.run_id, done


def run_tags(client: MlflowClient, run_id: str) -> dict[str, str]:
    """The tags of run ``run_id``.

    Raises:
        TrackingUnavailable: the run is not in this tracking store.
    """
    try:
        return client.get_run(run_id).data.tags
    except mlflow.exceptions.MlflowException:
        raise TrackingUnavailable(
            f"run {run_id} is not in {shown_uri(client.tracking_uri)}: "
            "set MLFLOW_TRACKING_URI to the server it was logged to."
        ) from None
