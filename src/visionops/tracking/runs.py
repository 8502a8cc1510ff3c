"""A training's MLflow run: started or resumed, live per-epoch and system metrics, logging that survives an outage."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunTag

from visionops.config import Params
from visionops.contracts.model import RunInfo, is_model_uri
from visionops.contracts.results import TestMetrics
from visionops.errors import UserError
from visionops.files import atomic_write_text, project_root
from visionops.tracking import lineage
from visionops.tracking.connection import (
    TrackingUnavailable,
    connect,
    experiment_id,
    shown_uri,
)
from visionops.tracking.record import (
    LOGGED_EVALUATION,
    LOGGED_TRAINING,
    epoch_metric,
    log_evaluation,
    log_training,
)

log = logging.getLogger(__name__)


RUN_TAGS_ENV = "VISIONOPS_RUN_TAGS"  # JSON tags the run also gets: a sweep makes its trials its children this way


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


def start_run(
    client: MlflowClient, experiment: str, run_name: str, *, tags: dict[str, str], resume_file: Path
) -> RunInfo:
    """Start a run, or continue the one a killed training left in ``resume_file``; it also gets MLflow's own
    source, user and git tags (:func:`visionops.tracking.lineage.mlflow_source`) and :func:`extra_run_tags`.

    Returns:
        What run.json holds.
    """
    tags = {**lineage.mlflow_source(project_root()), **tags, **extra_run_tags()}
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
            client.log_batch(run_id, metrics=[epoch_metric(k, v, step, start=start[0]) for k, v in values.items()])
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


def log_missing(client: MlflowClient, params: Params, root: Path, *, artifacts: Path) -> tuple[str, list[str]]:
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
        log_training(
            client, run.run_id, params, root=root, train_dir=artifacts / "train", split_dir=artifacts / "split"
        )
        done.append("training")
    if TestMetrics.present(artifacts / "evaluate") and LOGGED_EVALUATION not in tags:
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
