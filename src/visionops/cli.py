"""Command line: one command per stage. dvc.yaml, the Prefect flow and people all call these."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from visionops.config import load_params
from visionops.errors import UserError

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
ModelOpt = Annotated[Path, typer.Option("--model", help="model.keras, or the train stage's folder holding it.")]


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one red message and exit code 1, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (UserError, FileNotFoundError, FileExistsError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


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

    report = run(manifest, load_params(params).split, out_dir)
    out.print(f"split: {json.dumps(report['totals'])} (split_id {report['split_id'][:12]})")
    _warn(report["warnings"])


@app.command()
@_user_errors
def train(
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
    split_dir: SplitOpt = Path("artifacts/split"),
    out_dir: OutOpt = Path("artifacts/train"),
) -> None:
    """Fine-tune EfficientNet in two stages (head, then top blocks); resumes a killed run."""
    from visionops.train import train as run

    settings = load_params(params)
    result = run(data, split_dir, settings.train, settings.augment, out_dir)
    last = result.history.iloc[-1].to_dict() if len(result.history) else {}
    out.print(f"train: {len(result.history)} epochs, weights {result.weights.used}, saved {result.model_path}")
    out.print("last epoch: " + ", ".join(f"{k}={v:.4f}" for k, v in last.items() if isinstance(v, float)))


@app.command()
@_user_errors
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
    model_dir: ModelOpt = Path("artifacts/train"),
    split_dir: SplitOpt = Path("artifacts/split"),
    out_dir: OutOpt = Path("artifacts/evaluate"),
) -> None:
    """Score the model on the test split (and evaluate.holdout_dir): metrics, per-class report, confusion matrix."""
    from visionops.evaluate import evaluate as run

    metrics = run(model_dir, data, split_dir, load_params(params).evaluate, out_dir)
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    out.print(f"evaluate: {json.dumps(shown)}")


@app.command()
@_user_errors
def predict(
    source: Annotated[Path, typer.Argument(help="An image file or a folder of images.")],
    model: ModelOpt = Path("artifacts/train"),
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
