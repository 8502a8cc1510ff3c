"""One client of the load test (tests/reliability/test_load.py), run as its own process.

``python load_client.py log PROJECT EPOCHS LIVE_EPOCHS SCORE`` logs a training-sized run the way `visionops train`
and `visionops evaluate` do, through the project's own code (:mod:`visionops.tracking`): the run is started, each
epoch's metrics are sent as the epoch ends (:func:`~visionops.tracking.live_metrics`, for the first LIVE_EPOCHS
epochs; a live logging that stopped leaves the rest to the end), then :func:`~visionops.tracking.log_training` logs
params, the missing epochs, tags, files and the model, and :func:`~visionops.tracking.log_evaluation` the test metrics
and reports, ending the run FINISHED. ``python load_client.py promote PROJECT`` runs the promote stage
(:func:`visionops.stages.promote.promote`, as `visionops promote` calls it) on that project.

PROJECT is a copy of a template project (validate, split and train outputs; tests/reliability/test_load.py makes
it); the client writes its own history.csv and metrics.json into it first. Every HTTP request the MLflow client
makes is timed (method, path, status, seconds) and written with the wall time to PROJECT/load-<mode>.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import zlib
from pathlib import Path

import requests

TIMINGS: list[dict] = []
_request = requests.Session.request


def _timed(self, method, url, *args, **kwargs):  # (every MLflow REST and artifact call goes through here)
    start = time.perf_counter()
    status = None
    try:
        response = _request(self, method, url, *args, **kwargs)
        status = response.status_code
        return response
    finally:
        host, _, path = url.split("://", 1)[-1].partition("?")[0].partition("/")
        TIMINGS.append(
            {"method": method, "host": host, "path": "/" + path, "status": status, "s": time.perf_counter() - start}
        )


requests.Session.request = _timed  # type: ignore[method-assign]

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
HEAD_EPOCHS = 5  # stage 1 (the head); the rest is stage 2 (fine-tuning), on the run's one epoch axis


def history(epochs: int, seed: int):
    """A plausible per-epoch history: decreasing losses, rising accuracies, seeded per client."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    t = np.arange(epochs)
    frame = pd.DataFrame({"epoch": t, "stage": np.where(t < HEAD_EPOCHS, 1, 2)})
    frame["loss"] = 1.4 * np.exp(-t / 20) + rng.uniform(0, 0.05, epochs)
    frame["accuracy"] = 1 - frame["loss"] / 1.6
    frame["val_loss"] = frame["loss"] + rng.uniform(0, 0.1, epochs)
    frame["val_accuracy"] = 1 - frame["val_loss"] / 1.7
    return frame


def log(project: Path, epochs: int, live_epochs: int, score: float) -> dict:
    from visionops.contracts.data import SplitInfo
    from visionops.contracts.results import TestMetrics
    from visionops.params import load_params
    from visionops.tracking import connection, record, runs

    artifacts, seed = project / "artifacts", zlib.crc32(project.name.encode())
    frame = history(epochs, seed)
    (artifacts / "train" / "history.csv").write_text(frame.to_csv(index=False, lineterminator="\n"))
    metrics = TestMetrics.read(artifacts / "evaluate")
    split_id = SplitInfo.read(artifacts / "split").split_id
    dataclasses.replace(metrics, accuracy=score, split_id=split_id).write(artifacts / "evaluate")

    params = load_params(project / "params.yaml")
    client = connection.connect(project)
    resume = project / "resume" / "mlflow_run_id"
    run = runs.start_run(client, params.tracking.experiment, project.name, tags={"stage": "train"}, resume_file=resume)
    listener = runs.live_metrics(client, run.run_id)
    for row in frame.to_dict("records")[:live_epochs]:  # as fitting.epoch_reporter passes a finished epoch on
        listener(int(row["epoch"]), {**{k: row[k] for k in METRICS}, "stage": float(row["stage"])})
    run.write(artifacts / "train")
    model_uri = record.log_training(
        client, run.run_id, params, root=project, train_dir=artifacts / "train", split_dir=artifacts / "split"
    )
    record.log_evaluation(client, run.run_id, artifacts / "evaluate")
    return {"run_id": run.run_id, "model_uri": model_uri, "score": score}


def promote(project: Path) -> dict:
    from visionops.contracts.layout import Artifacts
    from visionops.params import load_params
    from visionops.stages.promote import promote as run

    artifacts = Artifacts(project / "artifacts")
    decided = run(load_params(project / "params.yaml"), artifacts, data_dir=project / "data", out_dir=artifacts.promote)
    return {"version": decided.version, "decision": decided.decision, "reason": decided.reason}


def main(argv: list[str]) -> None:
    mode, project = argv[0], Path(argv[1]).resolve()
    import visionops.stages.promote  # imported before the clock starts: the figures are the requests'
    import visionops.tracking  # noqa: F401

    start = time.perf_counter()
    result = log(project, int(argv[2]), int(argv[3]), float(argv[4])) if mode == "log" else promote(project)
    result.update(wall_s=time.perf_counter() - start, requests=TIMINGS)
    (project / f"load-{mode}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
