"""Prefect flow: the DVC pipeline's stages as tasks, in dvc.yaml's order, with dvc.yaml's retries and timeouts.

The tasks do not reimplement the stages: each runs ``dvc repro --single-item <stage>``, so DVC decides what is
stale, writes dvc.lock exactly as ``dvc repro`` would and skips what is unchanged (also on a fresh worker clone,
through DVC's run cache on the remote). dvc.yaml is the one list of stages: a stage added there is a task here, with
the ``meta: {prefect: ...}`` it declares (retries, timeout, whether a sweep's trials run it, whether it logs to
MLflow). Whether a stage ran, was restored from the run cache or was up to date comes from DVC's own state (``dvc
status`` before, its run cache after), never from its log text. Params overrides are applied with DVC's own ``-S``
code and the result is saved as a DVC experiment (``dvc exp show``), never committed over params.yaml.

Run in-process, without a server:  ``python flows/training_pipeline.py [-S train.finetune.epochs=40 ...]``.
Deployments (work pools process / docker GPU / kubernetes GPU): prefect.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run
from prefect.tasks import exponential_backoff

from visionops.contracts.layout import Artifacts
from visionops.contracts.model import RunInfo
from visionops.contracts.results import Promotion, TestMetrics
from visionops.tracking import links
from visionops.tracking.runs import RUN_TAGS_ENV

FLOW_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class StagePolicy:
    """How the flow runs one dvc.yaml stage: its ``meta: {prefect: {...}}``, with these defaults."""

    retries: int = 0  # where a failure can be transient (a tracking server, the registry); train resumes
    timeout_s: int = 3600
    in_sweep_trials: bool = True  # False: a sweep runs it once for its best trial (promote)
    tracked: bool = False  # it logs into the training's MLflow run: `visionops log-run` follows it after an outage


def pipeline_stages(project: Path = FLOW_DIR.parent) -> dict[str, StagePolicy]:
    """dvc.yaml's stages in order, each with its policy."""
    stages = yaml.safe_load((Path(project) / "dvc.yaml").read_text())["stages"]
    return {name: StagePolicy(**(spec.get("meta", {}).get("prefect") or {})) for name, spec in stages.items()}


STAGES = pipeline_stages()


class StageFailed(RuntimeError):
    """A command of the pipeline exited non-zero; the message holds the end of its output."""


def sh(cmd: list[str], cwd: Path, extra_env: dict[str, str] | None = None, quiet: bool = False) -> str:
    """Run a command in the project (with ``extra_env``), streaming its output into the Prefect logs.

    The project's own ``src/`` goes first on PYTHONPATH, so a worker runs the code of the clone it pulled,
    not whatever version of visionops its environment was installed from.

    Args:
        quiet: a query (`dvc status --json`): return its stdout alone, log nothing but a failure.

    Raises:
        StageFailed: the command failed; the message ends with its last 40 lines (the reason, for the UI).
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd / "src"), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra_env or {})
    if quiet:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise StageFailed(f"`{' '.join(cmd)}` exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done.stdout
    logger = get_run_logger()
    logger.info("$ %s", " ".join(cmd))
    lines: list[str] = []
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            logger.info(line)
    if proc.returncode != 0:
        raise StageFailed(f"`{' '.join(cmd)}` exited {proc.returncode}:\n" + "\n".join(lines[-40:]))
    return "\n".join(lines)


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10), timeout_seconds=3600)
def pull_data(project: Path, data_rev: str | None) -> None:
    """Check out data.dvc at ``data_rev`` (if given), pull its data and DVC's run cache from the remotes."""
    if data_rev:
        sh(["git", "checkout", data_rev, "--", "data.dvc"], project)
    sh(["visionops", "pull-data"], project)  # the embedded sample from the in-repo remote, other data from the default
    sh(["dvc", "fetch", "--run-cache"], project)  # what earlier runs on any worker computed: lets repro skip it


class NoTrackingServer(RuntimeError):
    """A deployment run would log into its temporary clone, which is deleted when the run ends."""


def check_tracking_target() -> None:
    """Refuse to run a deployment whose MLflow runs would be lost.

    A worker runs a deployment in a temporary clone. Without MLFLOW_TRACKING_URI, runs and model versions would go
    to the clone's own mlflow.db and be deleted with it; the stack's workers (``./run.sh up``) and the team stack's
    set it.

    Raises:
        NoTrackingServer: this is a deployment run and MLFLOW_TRACKING_URI is not set.
    """
    if deployment.get_id() and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise NoTrackingServer(
            "MLFLOW_TRACKING_URI is not set on this worker: the run's MLflow records would be written into the flow "
            "run's temporary clone and lost with it. Start workers with `./run.sh up` (they log to the stack's MLflow "
            "server), or set MLFLOW_TRACKING_URI in the worker's environment or the work pool's `env`."
        )


@task(timeout_seconds=60)
def apply_overrides(project: Path, overrides: list[str]) -> None:
    """Set params the way ``dvc exp run -S key=value`` does (DVC's own code; unknown keys are errors)."""
    from dvc.utils.hydra import apply_overrides as dvc_apply

    get_run_logger().info("params overrides: %s", overrides)
    dvc_apply(project / "params.yaml", overrides)


Outcome = Literal["ran", "restored", "up to date"]


def run_cache_entries(project: Path) -> set[str]:
    """The entries of DVC's run cache (``<cache>/runs/``): running a stage adds one, restoring from it adds none."""
    cache = Path(sh(["dvc", "cache", "dir"], project, quiet=True).strip())
    runs = cache / "runs"
    return {str(p.relative_to(runs)) for p in runs.rglob("*") if p.is_file()} if runs.is_dir() else set()


def stale(project: Path, stage: str) -> bool:
    """Whether DVC would run (or restore) ``stage``: `dvc status` of it alone is not empty."""
    report = json.loads(sh(["dvc", "status", "--json", stage], project, quiet=True) or "{}")
    return bool(report.get(stage))


def _stage_task(stage: str, policy: StagePolicy):
    @task(
        name=stage,
        retries=policy.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=10),
        timeout_seconds=policy.timeout_s,
    )
    def run_stage(project: Path, extra_env: dict[str, str] | None = None) -> Outcome:
        """``dvc repro`` of one stage: whether its command ran, DVC restored its outputs, or it was up to date."""
        if not stale(project, stage):
            return "up to date"
        before = run_cache_entries(project)
        sh(["dvc", "repro", "--single-item", "--pull", stage], project, extra_env)
        return "ran" if run_cache_entries(project) - before else "restored"

    return run_stage


STAGE_TASKS = {stage: _stage_task(stage, policy) for stage, policy in STAGES.items()}


@task(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=10), timeout_seconds=1800)
def log_run(project: Path) -> None:
    """`visionops log-run`: log whatever a tracking-server outage during train or evaluate kept out of the run.

    A deployment's clone is deleted when the flow run ends, and with it the only copy of what the outage kept out:
    so the flow logs it before leaving, retrying with backoff while the server comes back; when it stays away the
    flow run fails with the reason rather than completing with an incomplete MLflow run. Nothing to do (one request)
    when the run is complete.
    """
    sh(["visionops", "log-run"], project)


def git_identity(project: Path) -> dict[str, str]:
    """The author of the experiment's commit where git knows none: a fresh container, pod or CI host.

    `dvc exp save` commits, and git refuses to without a user. A worker's own identity (``git config user.email``,
    or GIT_AUTHOR_EMAIL) wins; else the commit is authored ``visionops worker <visionops@HOST>`` (the worker's host
    name: a docker flow run's container id, a pod's name), as GIT_AUTHOR_*/GIT_COMMITTER_* for that command only.
    """
    configured = subprocess.run(["git", "config", "user.email"], cwd=project, capture_output=True, text=True)
    if configured.stdout.strip() or os.environ.get("GIT_AUTHOR_EMAIL"):
        return {}
    name, email = "visionops worker", f"visionops@{socket.gethostname()}"
    return {
        f"GIT_{role}_{key}": value
        for role in ("AUTHOR", "COMMITTER")
        for key, value in (("NAME", name), ("EMAIL", email))
    }


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10), timeout_seconds=3600)
def save_experiment(project: Path, name: str, push: bool, stages: list[str]) -> None:
    """Record the overridden run of ``stages`` as a DVC experiment; with ``push``, send it to the git and DVC remotes.

    Only the stages that ran are saved: a trial of a sweep stops before promote, whose outputs it never made.
    """
    sh(["dvc", "exp", "save", "--force", "--name", name, *stages], project, git_identity(project))
    if push:
        sh(["dvc", "exp", "push", "origin", name], project)


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10), timeout_seconds=3600)
def push_results(project: Path) -> None:
    """Push outputs and run cache to the DVC remote, so a rerun anywhere skips what this run computed."""
    sh(["dvc", "push", "--run-cache"], project)


@dataclass(frozen=True)
class Results:
    """What the stages left for the report, read through the stages' typed files."""

    metrics: dict
    decision: Promotion | None
    run: RunInfo


def read_results(project: Path, promoted: bool = True) -> Results:
    """The test metrics, the promotion decision (when promote ran) and the MLflow run of the pipeline in ``project``."""
    artifacts = Artifacts(project / "artifacts")
    metrics = TestMetrics.read(artifacts.evaluate).to_dict()
    decision = Promotion.read(artifacts.promote) if promoted else None
    return Results(metrics, decision, RunInfo.read(artifacts.train))


def summary_markdown(results: Results, ran: dict[str, Outcome]) -> str:
    """The run's report: which stages ran, the test metrics, the promotion decision, MLflow links."""
    run, decision = results.run, results.decision
    ui = links.ui_url(run.tracking_uri)  # a server's own UI, or where `./run.sh up` serves the project's store
    stages = [s for s in STAGES if s in ran]
    lines = [
        "## Training pipeline",
        "",
        "| stage | " + " | ".join(stages) + " |",
        "|---|" + "---|" * len(stages),
        "| ran | " + " | ".join(ran[s] for s in stages) + " |",
        "",
        "### Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in results.metrics.items() if isinstance(v, float)),
        "",
        f"- MLflow run: [{run.run_name}]({links.run_url(ui, run.experiment_id, run.run_id)}), "
        f"its [artifacts]({links.run_url(ui, run.experiment_id, run.run_id, tab='artifacts')})",
    ]
    if decision is not None:
        name, version = decision.registered_model, decision.version
        lines[-1:-1] = ["### Promotion", "", f"**{decision.decision}**: {decision.reason}", ""]
        lines.append(
            f"- Model version: [{name} v{version}]({links.model_url(ui, name, version)}), "
            f"all versions and aliases: [{name}]({links.model_url(ui, name)})"
        )
    else:
        lines.append("- Not promoted here: a sweep promotes its best trial once, when all trials have ended.")
    if not run.tracking_uri.startswith("http"):
        lines.append(f"- Tracking store: `{run.tracking_uri}` (open it with `./run.sh up` or `visionops ui`)")
    return "\n".join(lines)


def _experiment_name() -> str:
    """A DVC experiment name from the Prefect flow run's name (DVC allows letters, digits, - and _)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", flow_run.get_name() or "prefect-run")


@flow(name="training-pipeline", log_prints=True)
def training_pipeline(
    overrides: list[str] | None = None,
    data_rev: str | None = None,
    experiment: str | None = None,
    project_dir: str = ".",
    push: bool = False,
    promote: bool = True,
    run_tags: dict[str, str] | None = None,
    experiment_name: str | None = None,
) -> dict[str, Any]:
    """Validate, split, train, evaluate and promote through DVC, reporting to Prefect and MLflow.

    Args:
        overrides: params overrides as for ``dvc exp run -S``: ``["train.finetune.epochs=40"]``. They make the run
            a DVC experiment (named after the flow run, or ``experiment_name``) instead of changing params.yaml.
        data_rev: a git revision whose data.dvc to train on (default: the checked-out one).
        experiment: the MLflow experiment (an override of ``tracking.experiment``).
        project_dir: the project checkout (a deployment's pull steps clone into the working directory).
        push: push outputs, run cache and the experiment to the remotes, so reruns on any worker skip what is done.
        promote: run the promote stage; a sweep's trials leave it to the sweep, which promotes its best trial once.
        run_tags: tags the training's MLflow run also gets (a sweep: its parent run, the trial's number).
        experiment_name: the DVC experiment's name (default: the flow run's name).

    Returns:
        The promotion decision (None without promote), the test metrics and which stages ran.
    """
    check_tracking_target()
    project = Path(project_dir).resolve()
    settings = list(overrides or []) + ([f"tracking.experiment={experiment}"] if experiment else [])
    env = {RUN_TAGS_ENV: json.dumps(run_tags)} if run_tags else {}
    pull_data(project, data_rev)
    if settings:
        apply_overrides(project, settings)
    ran: dict[str, Outcome] = {}
    chosen = [stage for stage, policy in STAGES.items() if promote or policy.in_sweep_trials]
    last_tracked = max((i for i, s in enumerate(chosen) if STAGES[s].tracked), default=-1)
    for i, stage in enumerate(chosen):
        ran[stage] = STAGE_TASKS[stage](project, env)
        if i == last_tracked and any(ran[s] == "ran" for s in chosen[: i + 1] if STAGES[s].tracked):
            log_run(project)  # (restored stages were logged when they ran)
    if settings:
        save_experiment(project, experiment_name or _experiment_name(), push, list(ran))
    if push:
        push_results(project)
    results = read_results(project, promote)
    create_markdown_artifact(
        summary_markdown(results, ran), key="training-pipeline", description="metrics, promotion decision, MLflow links"
    )
    decision = asdict(results.decision) if results.decision else None
    return {"ran": ran, "decision": decision, "metrics": results.metrics, "run": asdict(results.run)}


def main() -> None:
    """In-process run without a Prefect server: ``python flows/training_pipeline.py -S key=value ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", "--set-param", action="append", default=[], help="override, as for dvc exp run -S")
    parser.add_argument("--data-rev", help="git revision of data.dvc to train on")
    parser.add_argument("--experiment", help="MLflow experiment")
    parser.add_argument("--push", action="store_true", help="push outputs and run cache to the DVC remote")
    args = parser.parse_args()
    result = training_pipeline(
        overrides=args.set_param, data_rev=args.data_rev, experiment=args.experiment, push=args.push
    )
    print(json.dumps({"ran": result["ran"], "decision": result["decision"]["decision"]}))


if __name__ == "__main__":
    main()
