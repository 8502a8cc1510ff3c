"""Command line: one command per stage. dvc.yaml, the Prefect flow and people all call these."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from visionops.config import load_params
from visionops.errors import UserError
from visionops.files import project_root, store_root, write_json

app = typer.Typer(
    help="Fine-tune EfficientNet on DVC-versioned image folders: sample data, validate, split, train, evaluate, "
    "predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()


@app.callback()
def _setup() -> None:
    """Show the package's own log lines (resume notices, weight fallbacks) on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("visionops")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        logger.addHandler(handler)


ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]
DataOpt = Annotated[Path, typer.Option("--data", help="Class-per-folder image root: data/<label>/<image>.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]
SplitOpt = Annotated[Path, typer.Option("--split", help="The split stage's output folder.")]
ArtifactsOpt = Annotated[Path, typer.Option("--artifacts", help="Folder holding the stages' outputs.")]
ModelOpt = Annotated[
    str,
    typer.Option("--model", help="model.keras, the train stage's folder, or an MLflow URI: models:/NAME@champion."),
]


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one red message and exit code 1, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (UserError, FileNotFoundError, FileExistsError) as exc:  # (escaped: messages name classes in [...])
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:  # permissions, a full disk, a path through a file: the OS names the path
            err.print(f"[bold red]error:[/] {exc}. Check that this user can write there and the disk has room.",
                      highlight=False, markup=True, soft_wrap=True)  # fmt: skip
            raise typer.Exit(1) from None

    return wrapper


def _writable(folder: Path) -> Path:
    """Create ``folder`` and prove this user can write in it, before a stage spends minutes on work it cannot save.

    Raises:
        UserError: the folder cannot be created or written; the message names it and says how to fix it.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(
            f"cannot write to the output folder {folder}: {exc.strerror or exc}. Make it writable for this user "
            "(or remove what blocks it), or choose another folder with --out."
        ) from None
    return folder


@app.command("sample-data")
@_user_errors
def sample_data(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to create; must be missing or empty.")] = Path("data"),
    per_class: Annotated[int, typer.Option(help="Images per class.", min=1)] = 200,
    size: Annotated[int, typer.Option(help="Image side in pixels.", min=16)] = 96,
    seed: Annotated[int, typer.Option(help="Seed; the same arguments give byte-identical files.")] = 0,
) -> None:
    """Generate the embedded sample dataset: upright scenes of 4 shape classes, deterministically."""
    from visionops.sample import SHAPES, generate_sample

    paths = generate_sample(out_dir, per_class=per_class, size=size, seed=seed)
    out.print(f"wrote {len(paths)} images in {len(SHAPES)} classes to {out_dir}/")


@app.command()
@_user_errors
def validate(
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
    out_dir: OutOpt = Path("artifacts/validate"),
    workers: Annotated[int | None, typer.Option(help="Reader threads; default: all cores.")] = None,
) -> None:
    """Scan data/, run the Great Expectations suites, quarantine bad files, write the manifest and Data Docs."""
    _writable(out_dir)  # before the slow imports and the scan
    from visionops.validate import validate as run

    report = run(data, load_params(params).validate_, out_dir, workers=workers)
    s = report.summary
    out.print(f"validate: {s['usable']} usable, {s['quarantined']} quarantined, {s['ignored']} ignored files")
    out.print(f"classes: {json.dumps(s['classes'])}")
    for reason, n in s["quarantine_reasons"].items():
        out.print(f"  quarantined {n}: {reason} (see {out_dir / 'quarantine.csv'})")
    _warn(s["warnings"])


@app.command()
@_user_errors
def split(
    params: ParamsOpt = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="The validate stage's manifest.")] = Path(
        "artifacts/validate/manifest.csv"
    ),
    out_dir: OutOpt = Path("artifacts/split"),
) -> None:
    """Split the usable images into train / val / test lists by a seeded hash of their content."""
    from visionops.split import split as run

    report = run(manifest, load_params(params).split, _writable(out_dir))
    out.print(f"split: {json.dumps(report['totals'])} (split_id {report['split_id'][:12]})")
    _warn(report["warnings"])


def _log_or_warn(what: str, log: Callable[[], Any]) -> None:
    """Log to MLflow; on failure keep the stage's result (it is on disk) and say how to log it later."""
    try:
        log()
    except Exception as exc:  # noqa: BLE001 - any tracking failure: the files are safe, logging can be redone
        err.print(
            f"[bold yellow]warning:[/] logging {what} to MLflow failed ({exc}). The results are saved under "
            "artifacts/; run `visionops log-run` once the tracking server is back.",
            highlight=False,
        )


@app.command()
@_user_errors
def train(
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
    split_dir: SplitOpt = Path("artifacts/split"),
    out_dir: OutOpt = Path("artifacts/train"),
    track: Annotated[
        bool,
        typer.Option(
            "--track/--no-track",
            help="Log the run to MLflow. --no-track: the non-chief pods of a multi-worker job (the chief logs once).",
        ),
    ] = True,
) -> None:
    """Fine-tune EfficientNet in two stages (head, then top blocks), logged as one MLflow run; resumes a killed run."""
    from visionops import tracking

    settings = load_params(params)
    _writable(out_dir)
    if not track:
        from visionops.train import train as run

        _report(run(data, split_dir, settings.train, settings.augment, out_dir))
        return
    # Fail fast, before any training (or TensorFlow import), when the server is down: nothing is lost.
    client = tracking.connect(consequence="nothing was trained: rerun `visionops train` once it answers")
    from visionops.contracts import read_split
    from visionops.train import resume_dir
    from visionops.train import train as run

    _, split_info = read_split(split_dir)
    t = settings.train
    name = settings.tracking.run_name or tracking.default_run_name(t, split_dir)
    resume = resume_dir(out_dir, t, settings.augment, split_info) / "mlflow_run_id"
    info = tracking.start_run(client, settings.tracking.experiment, name, {"stage": "train"}, resume)
    run_id = info["run_id"]
    try:
        result = run(data, split_dir, t, settings.augment, out_dir)
    except BaseException:
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    write_json(out_dir / "run.json", info)  # written before logging, so an outage cannot lose the run id
    _log_or_warn(
        "the training",
        lambda: tracking.log_training(client, run_id, settings, project_root(), out_dir.parent),
    )
    _report(result)
    out.print(f"MLflow run {name} ({run_id}) in {tracking.shown_uri(client.tracking_uri)}")


def _report(result: Any) -> None:
    """The train stage's summary lines: epochs, weights used, where the model is, the last epoch's metrics."""
    last = result.history.iloc[-1].to_dict() if len(result.history) else {}
    out.print(f"train: {len(result.history)} epochs, weights {result.weights.used}, saved {result.model_path}")
    out.print("last epoch: " + ", ".join(f"{k}={v:.4f}" for k, v in last.items() if isinstance(v, float)))


@app.command()
@_user_errors
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
    model_dir: ModelOpt = "artifacts/train",
    split_dir: SplitOpt = Path("artifacts/split"),
    out_dir: OutOpt = Path("artifacts/evaluate"),
) -> None:
    """Score the model on the test split (and evaluate.holdout_dir) and log the results into the training run."""
    _writable(out_dir)  # before TensorFlow is imported
    from visionops import tracking
    from visionops.evaluate import evaluate as run

    metrics = run(model_dir, data, split_dir, load_params(params).evaluate, out_dir)
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    out.print(f"evaluate: {json.dumps(shown)}")
    errors = out_dir / "errors" / "gallery.html"
    out.print(f"misclassified test images, worst first: {errors} (and gallery.png)")
    run_id = _training_run(model_dir)
    if run_id:
        _log_or_warn("the evaluation", lambda: tracking.log_evaluation(tracking.connect(), run_id, out_dir))


def _training_run(model_dir: str) -> str | None:
    """The MLflow run of a model trained here (run.json beside it); None for an MLflow URI or a loose model file."""
    from visionops import tracking
    from visionops.model import is_model_uri

    run_file = (Path(model_dir) if Path(model_dir).is_dir() else Path(model_dir).parent) / "run.json"
    if is_model_uri(model_dir) or not run_file.is_file():
        return None
    return tracking.read_run_file(run_file)["run_id"]


@app.command()
@_user_errors
def export(
    data: DataOpt = Path("data"),
    model_dir: ModelOpt = "artifacts/train",
    split_dir: SplitOpt = Path("artifacts/split"),
    out_dir: OutOpt = Path("artifacts/export"),
) -> None:
    """Export the model as a TensorFlow SavedModel and TFLite (float32, int8), each checked against Keras."""
    _writable(out_dir)
    from visionops import tracking
    from visionops.export import export as run

    result = run(model_dir, data, split_dir, out_dir)
    for name, f in result["formats"].items():
        verdict = "ok" if f["within_tolerance"] else "[yellow]outside its tolerance[/]"
        out.print(
            f"export: {name} → {out_dir / f['path']} ({f['bytes'] / 1e6:.1f} MB): max |Δp| {f['max_abs_diff']:.2g} "
            f"(tolerance {f['tolerance']:g}, {verdict}), top-1 agreement {f['top1_agreement']:.0%} on "
            f"{result['check_images']} test images"
        )
    run_id = _training_run(model_dir)
    if run_id:
        _log_or_warn("the exports", lambda: tracking.log_export(tracking.connect(), run_id, out_dir))


@app.command("log-run")
@_user_errors
def log_run(
    params: ParamsOpt = Path("params.yaml"),
    artifacts: ArtifactsOpt = Path("artifacts"),
) -> None:
    """Log what an MLflow outage kept from the run in artifacts/train/run.json (training and/or evaluation)."""
    from visionops import tracking

    info = tracking.read_run_file(artifacts / "train" / "run.json")
    client = tracking.connect(consequence="the results stay under artifacts/: rerun `visionops log-run` later")
    try:
        tags = client.get_run(info["run_id"]).data.tags
    except Exception:  # noqa: BLE001 - MlflowException or a transport error: say where the run was
        raise tracking.TrackingUnavailable(
            f"run {info['run_id']} is not in {tracking.shown_uri(client.tracking_uri)}; it was started in "
            f"{info['tracking_uri']}: set MLFLOW_TRACKING_URI to that server."
        ) from None
    done = []
    if tracking.LOGGED_TRAINING not in tags:
        tracking.log_training(client, info["run_id"], load_params(params), project_root(), artifacts)
        done.append("training")
    if (artifacts / "evaluate" / "metrics.json").is_file() and tracking.LOGGED_EVALUATION not in tags:
        tracking.log_evaluation(client, info["run_id"], artifacts / "evaluate")
        done.append("evaluation")
    if done:
        out.print(f"log-run: {' and '.join(done)} logged to run {info['run_id']}")
    else:
        out.print(f"log-run: nothing missing in run {info['run_id']}")


@app.command()
@_user_errors
def promote(
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
    artifacts: ArtifactsOpt = Path("artifacts"),
    out_dir: OutOpt = Path("artifacts/promote"),
    replace_champion: Annotated[
        str | None,
        typer.Option(
            "--replace-champion",
            metavar="WHY",
            help="Make this model champion without comparing it (e.g. the champion answers another task or has other "
            "classes); the floors still apply and WHY is kept on the version.",
        ),
    ] = None,
) -> None:
    """Register the trained model as a new version (alias challenger); make it champion only if it wins."""
    from visionops.promote import promote as run

    if replace_champion is not None and not replace_champion.strip():
        raise UserError('--replace-champion needs the reason, e.g. --replace-champion "new task: orientation"')
    r = run(load_params(params), artifacts / "train" / "run.json", artifacts / "evaluate", data,
            artifacts / "split", _writable(out_dir), replace_champion)  # fmt: skip
    colour = {"promoted": "green", "kept": "yellow", "rejected": "red", "incomparable": "yellow"}[r["decision"]]
    again = " (decided earlier)" if r["already_decided"] else ""
    out.print(
        f"promote: {r['registered_model']} v{r['version']} [{colour}]{r['decision']}[/]{again}: {escape(r['reason'])}",
        soft_wrap=True,
    )
    if r["champion_rescored"]:
        out.print(f"  champion v{r['champion_before']} was re-scored on this split ({out_dir}/champion_v*/)")


@app.command()
@_user_errors
def rollback(
    params: ParamsOpt = Path("params.yaml"),
    reason: Annotated[str, typer.Option(help="Why, kept as a tag on the demoted version.")] = "manual rollback",
) -> None:
    """Give the champion alias back to the previous champion (promote.registered_model)."""
    from visionops.promote import rollback as run

    r = run(load_params(params).promote, reason)
    out.print(f"rollback: {r['registered_model']} champion is v{r['champion']} again (v{r['demoted']} demoted)")


@app.command()
@_user_errors
def registry(
    params: ParamsOpt = Path("params.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON, for scripts.")] = False,
) -> None:
    """List the registered model's versions: aliases, score, split, decision and its reason, run, weights."""
    from rich.table import Table

    from visionops.promote import registry_rows

    settings = load_params(params).promote
    rows = registry_rows(settings)
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    if not rows:
        out.print(f"{settings.registered_model}: no versions yet; `dvc repro` registers one.")
        return
    table = Table(title=f"{settings.registered_model} ({settings.metric} on its own test split)")
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    out.print(table)


@app.command()
@_user_errors
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you add auth.")] = "127.0.0.1",
) -> None:
    """The MLflow UI over the project's own store, in the foreground (Ctrl-C stops it and all its processes)."""
    from visionops import stack, tracking
    from visionops.processes import run_foreground

    uri = tracking.tracking_uri()
    if uri.startswith(("http://", "https://")):
        out.print(f"runs are on the tracking server {tracking.shown_uri(uri)}: open it in a browser")
        return
    local = stack.load()
    if stack.running(local):
        out.print(f"the local stack serves the MLflow UI already: {local.mlflow_url}")
        return
    out.print(f"MLflow UI on http://{host}:{port} over {uri} (Ctrl-C stops it)")
    raise typer.Exit(run_foreground(stack.ui_command(host, port)))


stack_app = typer.Typer(
    help="The local stack on 127.0.0.1: MLflow UI over the project's store, Prefect server and UI, process workers "
    "whose runs log to that MLflow. State and logs in .stack/.",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")


@stack_app.command("up")
@_user_errors
def stack_up(
    mlflow_port: Annotated[int, typer.Option(envvar="VISIONOPS_MLFLOW_PORT", help="MLflow UI port.")] = 5000,
    prefect_port: Annotated[int, typer.Option(envvar="VISIONOPS_PREFECT_PORT", help="Prefect UI port.")] = 4200,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Process workers (flow runs at once).")] = 1,
) -> None:
    """Start the stack (or leave it running) and wait until both servers answer."""
    from visionops import stack

    started = stack.up(stack.Stack(store_root(), mlflow_port, prefect_port, workers))
    _print_stack(started)


def _print_stack(local: Any) -> None:
    from visionops import stack

    health = stack.healthy(local)
    mark = {True: "[green]up[/]", False: "[red]not answering[/]"}
    out.print(f"MLflow UI   {local.mlflow_url}  {mark[health['mlflow']]}  (store {local.root / 'mlflow.db'})")
    out.print(f"Prefect UI  {local.prefect_url}  {mark[health['prefect']]}  (API {local.prefect_url}/api)")
    for row in stack.status(local):
        out.print(f"  {row['program']:<16} {row['state']:<9} {row['since']}", highlight=False)
    out.print(f"logs in {local.logs}/ (./run.sh logs); stop everything with ./run.sh down")


@stack_app.command("status")
@_user_errors
def stack_status() -> None:
    """The stack's programs, their state, the URLs; exit code 3 when it is not running."""
    from visionops import stack

    local = stack.load()
    if not stack.running(local):
        out.print("the local stack is not running: start it with ./run.sh up")
        raise typer.Exit(3)
    _print_stack(local)


@stack_app.command("down")
@_user_errors
def stack_down() -> None:
    """Stop every program of the stack with all its processes, then supervisord."""
    from visionops import stack

    out.print("stack stopped" if stack.down(stack.load()) else "the local stack was not running")


@stack_app.command("logs")
@_user_errors
def stack_logs() -> None:
    """Follow every log of the stack (Ctrl-C stops following; the stack keeps running)."""
    import os

    from visionops import stack

    logs = sorted(stack.load().logs.glob("*.log"))
    if not logs:
        raise UserError("no logs yet: start the stack with ./run.sh up")
    os.execvp("tail", ["tail", "-n", "20", "-F", *map(str, logs)])


@stack_app.command("deploy", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def stack_deploy(ctx: typer.Context) -> None:
    """Register prefect.yaml's `local` deployment with the stack's Prefect server (extra args go to prefect deploy)."""
    from visionops import stack

    local = stack.load()
    stack.deploy(local, ctx.args)
    out.print(f"deployed: ./run.sh prefect deployment run training-pipeline/local --watch   (UI {local.prefect_url})")


@stack_app.command("prefect", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_user_errors
def stack_prefect(ctx: typer.Context) -> None:
    """The prefect CLI against the stack's server: `visionops stack prefect deployment ls`."""
    from visionops import stack

    raise typer.Exit(stack.prefect(stack.load(), ctx.args, check=False))


@app.command("pull-data")
@_user_errors
def pull_data(
    if_absent: Annotated[bool, typer.Option("--if-absent", help="Do nothing when data/ exists.")] = False,
) -> None:
    """Check out the data data.dvc names: the embedded sample from the in-repo remote, other data from the default."""
    from visionops.remotes import pull_data as run

    source = run(project_root(), if_absent)
    if source == "present":
        out.print("pull-data: data/ exists, left as it is")
    else:
        out.print(f"pull-data: data/ restored from the {'embedded sample' if source == 'sample' else 'default'} remote")


@app.command()
@_user_errors
def predict(
    source: Annotated[Path, typer.Argument(help="An image file or a folder of images.")],
    model: ModelOpt = "artifacts/train",
    output: Annotated[Path, typer.Option("--out", help="CSV to write.")] = Path("predictions.csv"),
    top_k: Annotated[int, typer.Option(help="Labels per image.", min=1)] = 3,
) -> None:
    """Predict the top-k labels of images with a trained model and write them to a CSV."""
    from visionops.predict import predict as run

    if output.exists():
        raise FileExistsError(f"{output} exists; refusing to overwrite it. Choose another --out.")
    table = run(model, source, output, top_k=top_k)
    failed = int((table["error"] != "").sum())
    out.print(f"predict: {len(table) - failed} images → {output}" + (f" ({failed} unreadable)" if failed else ""))


if __name__ == "__main__":
    app()
