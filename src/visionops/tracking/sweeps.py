"""A sweep's parent run, its trials' child runs, and the table of trials logged when it ends."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from visionops.files import project_root
from visionops.tracking import lineage
from visionops.tracking.connection import (
    experiment_id,
)

SWEEP_TAG, TRIAL_TAG, EXPERIMENT_TAG = "visionops.sweep", "visionops.sweep.trial", "visionops.dvc_experiment"


def start_sweep(client: MlflowClient, experiment: str, sweep_id: str, *, settings: list[str], trials: int) -> str:
    """The parent run of a sweep (its trials' runs become its children); returns its id."""
    tags = {**lineage.mlflow_source(project_root()), SWEEP_TAG: sweep_id, "visionops.sweep.role": "parent"}
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


def finish_sweep(client: MlflowClient, parent_id: str, rows: list[dict[str, Any]], *, summary: str, best: dict) -> None:
    """Log the sweep's table of trials (an MLflow table and markdown), its best trial and decision; end the run."""
    with tempfile.TemporaryDirectory(prefix="visionops-sweep-") as tmp:
        (Path(tmp) / "sweep.md").write_text(summary + "\n", encoding="utf-8")
        (Path(tmp) / "trials.json").write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")
        client.log_artifacts(parent_id, tmp, "sweep")
    tags = [RunTag(f"visionops.sweep.best.{k}", str(v)) for k, v in best.items()]
    metrics = [Metric(f"best_{k}", float(v), 0, 0) for k, v in best.items() if isinstance(v, int | float)]
    client.log_batch(parent_id, metrics=metrics, tags=tags)
    client.set_terminated(parent_id, "FINISHED")
