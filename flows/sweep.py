"""Prefect flow: a parameter sweep, its trials fanned out over the work pool, one comparison and one promotion.

Each trial is a run of the training deployment (``training-pipeline/local`` by default) with its params overrides:
so it runs on a worker in its own clone, is saved as a DVC experiment (``dvc exp show`` lists it, ``dvc exp apply``
reproduces it) and logs one MLflow run, the child of the sweep's parent run. Trials do not promote. At most
``concurrency`` trials are queued at once (and a process worker takes one at a time: two workers, two trials). A
trial that fails is reported and the others go on. When all have ended, the best completed trial by
``promote.metric`` goes through the promote stage once, in a throwaway clone where its experiment is applied.

    ./run.sh sweep -S 'train.finetune.learning_rate=0.001,0.002,0.004' -S 'train.dropout=0.2,0.3' --concurrency 2
    ./run.sh prefect deployment run sweep/local --params '{"settings": ["train.dropout=0.2,0.3"]}'
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from training_pipeline import check_tracking_target, sh

from visionops.contracts.results import Promotion
from visionops.params import load_params
from visionops.tracking import connection, sweeps
from visionops.training import sweep

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def run_trials(
    trials: list[sweep.Trial], deployment: str, concurrency: int, parent_id: str, sweep_id: str
) -> dict[int, tuple[str, str]]:
    """Queue the trials as runs of ``deployment``, at most ``concurrency`` at a time; wait for all to end.

    Returns:
        Trial number → (final state, the failure's message or "").
    """
    logger = get_run_logger()
    waiting, running, ended = list(trials), {}, {}
    with get_client(sync_client=True) as client:
        while waiting or running:
            while waiting and len(running) < concurrency:
                trial = waiting.pop(0)
                tags = {
                    "mlflow.parentRunId": parent_id,
                    sweeps.SWEEP_TAG: sweep_id,
                    sweeps.TRIAL_TAG: str(trial.index),
                    sweeps.EXPERIMENT_TAG: trial.experiment,
                }
                parameters = {
                    "overrides": trial.overrides,
                    "push": True,
                    "promote": False,
                    "run_tags": tags,
                    "experiment_name": trial.experiment,
                }
                run = run_deployment(
                    deployment, parameters=parameters, timeout=0, as_subflow=False, flow_run_name=trial.experiment
                )
                running[trial.index] = run.id
                logger.info("trial %d %s queued as flow run %s", trial.index, trial.overrides, run.id)
            time.sleep(3)
            for index, run_id in list(running.items()):
                state = client.read_flow_run(run_id).state
                if state is not None and state.type.value in FINAL:
                    ended[index] = (state.type.value, "" if state.is_completed() else (state.message or state.name))
                    logger.info("trial %d ended %s %s", index, state.type.value, ended[index][1])
                    del running[index]
    return ended


def results(trials: list[sweep.Trial], ended: dict[int, tuple[str, str]], parent_id: str) -> list[sweep.TrialResult]:
    """Each trial's state with its MLflow run and test metrics (read from the sweep's child runs)."""
    children = sweeps.sweep_children(connection.connect(), parent_id)
    found = []
    for trial in trials:
        state, error = ended[trial.index]
        run = children.get(trial.index)
        metrics = (
            {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")} if run else {}
        )
        found.append(sweep.TrialResult(trial, state, run.info.run_id if run else None, metrics, error))
    return found


@task(retries=1, timeout_seconds=3600)
def promote_best(project: Path, best: sweep.TrialResult) -> Promotion:
    """Promote the best trial once: check out its DVC experiment in a throwaway clone, then ``dvc repro promote``.

    The clone pulls the experiment from this checkout's git (trials push it there) and its outputs from the DVC
    remote (trials push them), so the promote stage sees what the trial's train and evaluate wrote; the registry
    decides under its lock, against the champion, by the usual rule.
    """
    with tempfile.TemporaryDirectory(prefix="visionops-sweep-promote-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
        sh(["dvc", "exp", "pull", "origin", best.trial.experiment], clone)
        # The experiment's commit, checked out by git alone: `dvc exp apply` would also check out promote's outputs
        # of the base commit, which a trial (it stops before promote) never had in its cache.
        refs = sh(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], clone).split("\n")
        commit = next(line.split()[0] for line in refs if line.endswith(f"/{best.trial.experiment}"))
        sh(["git", "checkout", "-q", "--detach", commit], clone)
        sh(["visionops", "pull-data"], clone)
        sh(["dvc", "repro", "--single-item", "--pull", "promote"], clone)
        return Promotion.read(clone / "artifacts" / "promote")


@flow(name="sweep", log_prints=True)
def sweep_flow(
    settings: list[str],
    random: int | None = None,
    seed: int = 0,
    concurrency: int = 2,
    deployment: str = "training-pipeline/local",
    name: str | None = None,
    project_dir: str = ".",
) -> dict[str, Any]:
    """Run a grid (or ``random`` of it) of trials over the work pool; promote the best one.

    Args:
        settings: params to vary, in DVC's -S syntax: ``["train.dropout=0.2,0.3", "train.seed=range(1,3)"]``.
        random: draw this many trials of the grid (seeded by ``seed``) instead of running all of them.
        seed: the random search's seed.
        concurrency: trials queued at once (each process worker runs one at a time).
        deployment: the training deployment each trial runs as.
        name: the sweep's id (default: ``sweep-<flow run name>``); its trials' experiments are ``<id>-t<n>``.
        project_dir: the project checkout (a deployment's pull steps clone into the working directory).

    Returns:
        The table of trials, the best trial and the promotion decision.
    """
    check_tracking_target()
    project = Path(project_dir).resolve()
    params = load_params(project / "params.yaml")
    sweep_id = name or re.sub(r"[^A-Za-z0-9_-]", "-", f"sweep-{flow_run.get_name() or 'local'}")
    trials = sweep.plan(settings, sweep_id, random, seed=seed)
    client = connection.connect(project)
    parent_id = sweeps.start_sweep(client, params.tracking.experiment, sweep_id, settings=settings, trials=len(trials))
    found = results(trials, run_trials(trials, deployment, max(1, concurrency), parent_id, sweep_id), parent_id)
    metric = params.promote.metric
    best = sweep.best(found, metric, params.promote.higher_is_better)
    decision = promote_best(project, best) if best else None
    rows = sweep.table(found, metric)
    verdict = (
        f"best: trial {best.trial.index} ({best.trial.experiment}, {metric} {best.metrics[metric]:.4f}); promote: "
        f"**{decision.decision}** ({decision.registered_model} v{decision.version}): {decision.reason}"
        if best and decision
        else "no trial completed: nothing to promote"
    )
    summary = f"## Sweep {sweep_id}\n\n{sweep.markdown(rows)}\n\n{verdict}\n"
    best_facts: dict[str, Any] = {}
    if best and decision:
        best_facts = {
            "trial": best.trial.index,
            "experiment": best.trial.experiment,
            metric: best.metrics[metric],
            "run_id": best.run_id,
            "decision": decision.decision,
            "version": decision.version,
        }
    sweeps.finish_sweep(client, parent_id, rows, summary=summary, best=best_facts)
    create_markdown_artifact(summary, key="sweep", description=f"{len(trials)} trials, the best, the decision")
    return {"sweep": sweep_id, "parent_run_id": parent_id, "trials": rows, "best": best_facts}


def main() -> None:
    """``python flows/sweep.py -S key=v1,v2 ... [--random N] [--concurrency 2]`` against a Prefect server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", "--set-param", action="append", default=[], help="params to vary, DVC -S syntax")
    parser.add_argument("--random", type=int, help="run this many trials of the grid, drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="the random search's seed")
    parser.add_argument("--concurrency", type=int, default=2, help="trials queued at once")
    parser.add_argument("--deployment", default="training-pipeline/local", help="the training deployment")
    parser.add_argument("--name", help="the sweep's id")
    args = parser.parse_args()
    result = sweep_flow(
        settings=args.set_param,
        random=args.random,
        seed=args.seed,
        concurrency=args.concurrency,
        deployment=args.deployment,
        name=args.name,
    )
    print(json.dumps({"sweep": result["sweep"], "best": result["best"]}))


if __name__ == "__main__":
    main()
