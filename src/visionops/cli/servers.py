"""The commands around the servers: the registry (list, roll back), the MLflow UI and the local stack."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from visionops.cli.common import JsonOpt, ParamsOpt, app, command, emit, out
from visionops.errors import EXIT_UNAVAILABLE, UserError
from visionops.files import project_root, store_root
from visionops.params import load_params


@app.command(rich_help_panel="Model Registry")
@command
def rollback(
    params: ParamsOpt = Path("params.yaml"),
    reason: Annotated[str, typer.Option(help="Why, kept as a tag on the demoted version.")] = "manual rollback",
    as_json: JsonOpt = False,
) -> None:
    """Give the champion alias back to the previous champion (promote.registered_model)."""
    from visionops.tracking.registry import rollback as run

    settings = load_params(params)
    r = run(settings.promote, reason, settings.runtime.lock_timeout_s)
    line = f"rollback: {r['registered_model']} champion is v{r['champion']} again (v{r['demoted']} demoted)"
    emit(r, as_json, lambda: [line])


@app.command(rich_help_panel="Model Registry")
@command
def registry(params: ParamsOpt = Path("params.yaml"), as_json: JsonOpt = False) -> None:
    """List the registered model's versions: aliases, score, split, decision and its reason, run, weights."""
    from rich.table import Table

    from visionops.tracking.registry import rows

    settings = load_params(params).promote
    found = rows(settings)
    if as_json or not found:
        emit(found, as_json, lambda: [f"{settings.registered_model}: no versions yet; `dvc repro` registers one."])
        return
    table = Table(title=f"{settings.registered_model} ({settings.metric} on its own test split)")
    for column in found[0]:
        table.add_column(column, overflow="fold")
    for row in found:
        table.add_row(*row.values())
    out.print(table)


@app.command(rich_help_panel="Servers")
@command
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you add auth.")] = "127.0.0.1",
) -> None:
    """The MLflow UI over the project's own store, in the foreground (Ctrl-C stops it and all its processes)."""
    from visionops.processes import run_foreground
    from visionops.stack import supervisor
    from visionops.tracking import connection

    uri = connection.tracking_uri()
    if uri.startswith(("http://", "https://")):
        out.print(f"runs are on the tracking server: open {landing(uri)}", soft_wrap=True, highlight=False)
        return
    local = supervisor.load()
    if supervisor.running(local):
        out.print(f"the local stack serves the MLflow UI already: {landing(uri)}", soft_wrap=True, highlight=False)
        return
    out.print(
        f"MLflow UI over {uri}: open {landing(uri, f'http://{host}:{port}')} (Ctrl-C stops it)",
        soft_wrap=True,
        highlight=False,
    )
    raise typer.Exit(run_foreground(supervisor.ui_command(host, port), env=supervisor.mlflow_server_env()))


def landing(tracking_uri: str, local_ui: str | None = None) -> str:
    """The URL to open: the runs table of the project's experiment (params.yaml's ``tracking.experiment``) in the
    UI's model-training view, or the list of experiments when params.yaml cannot say which."""
    from visionops.tracking import links

    try:
        experiment = load_params(project_root() / "params.yaml").tracking.experiment
    except UserError:  # (a broken params.yaml is train's problem, not a reason to keep the UI closed)
        return links.experiment_url(links.ui_url(tracking_uri, local_ui))
    return links.landing_url(links.ui_url(tracking_uri, local_ui), tracking_uri, experiment)


stack_app = typer.Typer(
    help="The local stack on 127.0.0.1: MLflow UI over the project's store, Prefect server and UI, process workers "
    "whose runs log to that MLflow. State and logs in .stack/.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(stack_app, name="stack", rich_help_panel="Servers")
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@stack_app.command("up")
@command
def stack_up(
    mlflow_port: Annotated[int, typer.Option(envvar="VISIONOPS_MLFLOW_PORT", help="MLflow UI port.")] = 5000,
    prefect_port: Annotated[int, typer.Option(envvar="VISIONOPS_PREFECT_PORT", help="Prefect UI port.")] = 4200,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Process workers (flow runs at once).")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Start the stack (or leave it running) and wait until both servers answer."""
    from visionops.stack import supervisor

    _show(supervisor.up(supervisor.Stack(store_root(), mlflow_port, prefect_port, workers)), as_json)


def _show(local: Any, as_json: bool) -> None:
    from visionops.stack import supervisor

    health, programs = supervisor.healthy(local), supervisor.status(local)
    mark = {True: "[green]up[/]", False: "[red]not answering[/]"}
    ui = landing(local.mlflow_url) if health["mlflow"] else local.mlflow_url
    lines = [
        f"MLflow UI   {ui}  {mark[health['mlflow']]}  (store {local.root / 'mlflow.db'})",
        f"Prefect UI  {local.prefect_url}  {mark[health['prefect']]}  (API {local.prefect_url}/api)",
        *(f"  {p['program']:<16} {p['state']:<9} {p['since']}" for p in programs),
        f"logs in {local.logs}/ (./run.sh logs); stop everything with ./run.sh down",
    ]
    result = {
        "mlflow": local.mlflow_url,
        "mlflow_ui": ui,
        "prefect": local.prefect_url,
        "healthy": health,
        "programs": programs,
        "logs": local.logs,
    }
    emit(result, as_json, lambda: lines)


@stack_app.command("status")
@command
def stack_status(as_json: JsonOpt = False) -> None:
    """The stack's programs, their state, the URLs; exit code 3 when it is not running."""
    from visionops.stack import supervisor

    local = supervisor.load()
    if not supervisor.running(local):
        emit({"running": False}, as_json, lambda: ["the local stack is not running: start it with ./run.sh up"])
        raise typer.Exit(EXIT_UNAVAILABLE)
    _show(local, as_json)


@stack_app.command("down")
@command
def stack_down() -> None:
    """Stop every program of the stack with all its processes, then supervisord."""
    from visionops.stack import supervisor

    out.print("stack stopped" if supervisor.down(supervisor.load()) else "the local stack was not running")


@stack_app.command("logs")
@command
def stack_logs() -> None:
    """Follow every log of the stack (Ctrl-C stops following; the stack keeps running)."""
    from visionops.stack import supervisor

    logs = sorted(supervisor.load().logs.glob("*.log"))
    if not logs:
        raise UserError("no logs yet: start the stack with ./run.sh up")
    os.execvp("tail", ["tail", "-n", "20", "-F", *map(str, logs)])


@stack_app.command("deploy", context_settings=PASS_THROUGH)
@command
def stack_deploy(ctx: typer.Context) -> None:
    """Register prefect.yaml's `local` deployment with the stack's Prefect server (extra args go to prefect deploy)."""
    from visionops.stack import commands, supervisor

    local = supervisor.load()
    commands.deploy(local, ctx.args)
    out.print(f"deployed: ./run.sh prefect deployment run training-pipeline/local --watch   (UI {local.prefect_url})")


@stack_app.command("prefect", context_settings=PASS_THROUGH)
@command
def stack_prefect(ctx: typer.Context) -> None:
    """The prefect CLI against the stack's server: `visionops stack prefect deployment ls`."""
    from visionops.stack import commands, supervisor

    raise typer.Exit(commands.prefect(supervisor.load(), ctx.args, check=False))


@stack_app.command("exec", context_settings=PASS_THROUGH)
@command
def stack_exec(ctx: typer.Context) -> None:
    """Run a command with the stack's environment (Prefect API, MLflow server): `visionops stack exec python ...`."""
    from visionops.stack import commands, supervisor

    if not ctx.args:
        raise UserError("stack exec needs a command, e.g. `visionops stack exec python flows/sweep.py -S ...`")
    raise typer.Exit(commands.execute(supervisor.load(), ctx.args, check=False))
