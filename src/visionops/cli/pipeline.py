"""The pipeline's commands, one per stage (dvc.yaml and the Prefect flow call these), plus predict and export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from visionops.cli.common import (
    ArtifactsOpt,
    DataOpt,
    JsonOpt,
    ModelOpt,
    OutOpt,
    ParamsOpt,
    SplitOpt,
    app,
    command,
    emit,
    out,
    ui_link,
    writable,
)
from visionops.errors import UserError
from visionops.files import project_root
from visionops.params import load_params


@app.command("sample-data", rich_help_panel="Data")
@command
def sample_data(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to create; must be missing or empty.")] = Path("data"),
    per_class: Annotated[int, typer.Option(help="Images per class.", min=1)] = 200,
    size: Annotated[int, typer.Option(help="Image width (and height, without --height) in pixels.", min=16)] = 96,
    height: Annotated[
        int | None, typer.Option(help="Image height in pixels (e.g. 375 with --size 500).", min=16)
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed; the same arguments give byte-identical files.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes drawing images; the files do not depend on it.", min=1)] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Generate the embedded sample dataset: upright scenes of 4 shape classes, deterministically."""
    from visionops.data.sample import SHAPES, generate_sample

    paths = generate_sample(out_dir, per_class=per_class, size=size, seed=seed, height=height, workers=workers)
    emit(paths, as_json, lambda: [f"wrote {len(paths)} images in {len(SHAPES)} classes to {out_dir}/"])


@app.command("pull-data", rich_help_panel="Data")
@command
def pull_data(
    if_absent: Annotated[bool, typer.Option("--if-absent", help="Do nothing when data/ exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check out the data data.dvc names: the embedded sample from the in-repo remote, other data from the default."""
    from visionops.data.remotes import pull_data as run

    source = run(project_root(), if_absent)
    where = {"present": "data/ exists, left as it is", "sample": "data/ restored from the embedded sample's remote"}
    emit(
        {"source": source},
        as_json,
        lambda: [f"pull-data: {where.get(source, 'data/ restored from the default remote')}"],
    )


@app.command(rich_help_panel="Pipeline stages (dvc.yaml runs these)")
@command
def validate(
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
    out_dir: OutOpt = Path("artifacts/validate"),
    workers: Annotated[int | None, typer.Option(help="Reader threads; default: all cores.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Scan data/, run the Great Expectations suites, quarantine bad files, write the manifest and Data Docs."""
    writable(out_dir)  # before the slow imports and the scan
    from visionops.stages.validate import validate as run

    s = run(data, load_params(params).validate_, out_dir, workers=workers).summary
    reasons = [
        f"  quarantined {n}: {why} (see {out_dir / 'quarantine.csv'})" for why, n in s["quarantine_reasons"].items()
    ]
    lines = [
        f"validate: {s['usable']} usable, {s['quarantined']} quarantined, {s['ignored']} ignored files",
        f"classes: {s['classes']}",
        *reasons,
    ]
    emit(s, as_json, lambda: lines, s["warnings"])


@app.command(rich_help_panel="Pipeline stages (dvc.yaml runs these)")
@command
def split(
    params: ParamsOpt = Path("params.yaml"),
    manifest: Annotated[Path, typer.Option(help="The validate stage's manifest.")] = Path(
        "artifacts/validate/manifest.csv"
    ),
    out_dir: OutOpt = Path("artifacts/split"),
    as_json: JsonOpt = False,
) -> None:
    """Split the usable images into train / val / test lists by a seeded hash of their content."""
    from visionops.stages.split import split as run

    report = run(manifest, load_params(params).split, writable(out_dir))
    emit(report, as_json, lambda: [f"split: {report.totals} (split_id {report.split_id[:12]})"], report.warnings)


@app.command(rich_help_panel="Pipeline stages (dvc.yaml runs these)")
@command
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
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune EfficientNet in two stages (head, then top blocks), logged as one MLflow run; resumes a killed run."""
    settings = load_params(params)
    writable(out_dir)
    from visionops.stages import train as stage  # (TensorFlow: imported here, after the quick checks)

    if track:
        result = stage.train_tracked(settings, data, split_dir, out_dir=out_dir)
    else:
        result = stage.train(settings, data_dir=data, split_dir=split_dir, out_dir=out_dir)

    def lines() -> list[str]:
        last = result.history.iloc[-1].to_dict() if len(result.history) else {}
        shown = [
            f"train: {len(result.history)} epochs, saved {result.model_path}",
            f"initial weights: {result.weights.describe()}",
            "last epoch: " + ", ".join(f"{k}={v:.4f}" for k, v in last.items() if isinstance(v, float)),
        ]
        if result.run:
            shown.append(f"MLflow run {result.run.run_name} ({result.run.run_id}) in {result.run.tracking_uri}")
            shown.append(f"  {ui_link(result.run.tracking_uri, result.run.experiment_id, result.run.run_id)}")
        return shown

    emit(result, as_json, lines, result.warnings)


@app.command(rich_help_panel="Parameters")
@command
def params(
    params: ParamsOpt = Path("params.yaml"),
    defaults: Annotated[
        bool, typer.Option("--defaults", help="The defaults instead (what the committed params.yaml holds).")
    ] = False,
) -> None:
    """Print params.yaml as it is read (every key, validated, with its comment), or the defaults."""
    from visionops.params import render

    print(render(None if defaults else load_params(params)), end="")


@app.command("plots-template", rich_help_panel="Parameters")
@command
def plots_template(
    path: Annotated[Path, typer.Argument(help="Where to write the template.")] = Path(
        ".venv/share/visionops/dvc-plots.html"
    ),
) -> None:
    """Make `dvc plots show` and `dvc plots diff` draw offline: write their page template with Vega inlined, and
    point this checkout's DVC at it (.dvc/config.local). `./run.sh setup` does this once."""
    import subprocess
    import sys

    from visionops.files import atomic_write_text
    from visionops.training.plots import dvc_plots_template

    path = path.resolve()
    atomic_write_text(path, dvc_plots_template())
    setting = ["config", "--local", "plots.html_template", str(path)]
    subprocess.run([sys.executable, "-m", "dvc", *setting], cwd=project_root(), check=True)
    print(f"dvc plots show and dvc plots diff draw offline: {path} (dvc {' '.join(setting[:3])})")


@app.command(rich_help_panel="Pretrained weights")
@command
def weights(as_json: JsonOpt = False) -> None:
    """List the variants train.model accepts, their default size, and whether ImageNet weights are here offline."""
    from rich.table import Table

    from visionops.training.weights import variants_table

    rows = variants_table()
    if as_json:
        emit(rows, as_json, lambda: [])
        return
    table = Table(title="train.model variants and their ImageNet weights (train.weights: imagenet)")
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    out.print(table)


@app.command(rich_help_panel="Pipeline stages (dvc.yaml runs these)")
@command
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
    model_dir: ModelOpt = "artifacts/train",
    split_dir: SplitOpt = Path("artifacts/split"),
    out_dir: OutOpt = Path("artifacts/evaluate"),
    as_json: JsonOpt = False,
) -> None:
    """Score the model on the test split (and evaluate.holdout_dir) and log the results into the training run."""
    writable(out_dir)  # before TensorFlow is imported
    from visionops.stages.evaluate import evaluate as run

    settings = load_params(params)
    result = run(
        model_dir,
        data_dir=data,
        split_dir=split_dir,
        params=settings.evaluate,
        out_dir=out_dir,
        runtime=settings.runtime,
    )
    shown = {k: round(v, 4) for k, v in result.metrics.items() if isinstance(v, float)}
    lines = [f"evaluate: {shown}", f"misclassified test images, worst first: {out_dir / 'errors' / 'gallery.html'}"]
    emit(result, as_json, lambda: lines, result.warnings)


@app.command(rich_help_panel="Use a trained model")
@command
def export(
    data: DataOpt = Path("data"),
    model_dir: ModelOpt = "artifacts/train",
    split_dir: SplitOpt = Path("artifacts/split"),
    out_dir: OutOpt = Path("artifacts/export"),
    as_json: JsonOpt = False,
) -> None:
    """Export the model as a SavedModel, TFLite (float32, int8) and ONNX, each checked against Keras."""
    writable(out_dir)
    from visionops.stages.export import export as run

    result = run(model_dir, data, split_dir, out_dir=out_dir)

    def lines() -> list[str]:
        shown = []
        for name, f in result.report["formats"].items():
            verdict = "ok" if f["within_tolerance"] else "[yellow]outside its tolerance[/]"
            shown.append(
                f"export: {name} → {out_dir / f['path']} ({f['bytes'] / 1e6:.1f} MB): max |Δp| {f['max_abs_diff']:.2g} "
                f"(tolerance {f['tolerance']:g}, {verdict}), top-1 agreement {f['top1_agreement']:.0%} on "
                f"{result.report['check_images']} test images"
            )
        return shown

    emit(result, as_json, lines, result.warnings)


@app.command(rich_help_panel="Use a trained model")
@command
def predict(
    source: Annotated[Path, typer.Argument(help="An image file or a folder of images.")],
    model: ModelOpt = "artifacts/train",
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder; predictions.csv is written there.")] = Path(
        "artifacts/predict"
    ),
    top_k: Annotated[int | None, typer.Option(help="Labels per image; default: evaluate.top_k.", min=1)] = None,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Predict the top-k labels of images with a trained model; write them to OUT/predictions.csv."""
    from visionops.stages.predict import FILE
    from visionops.stages.predict import predict as run

    if (out_dir / FILE).exists():
        raise FileExistsError(f"{out_dir / FILE} exists; refusing to overwrite it. Choose another --out folder.")
    k = top_k or (load_params(params).evaluate.top_k if params.is_file() else 3)
    table = run(model, source, writable(out_dir), top_k=k)
    failed = int((table["error"] != "").sum())
    line = f"predict: {len(table) - failed} images → {out_dir / FILE}" + (f" ({failed} unreadable)" if failed else "")
    emit(table, as_json, lambda: [line])


@app.command(rich_help_panel="Pipeline stages (dvc.yaml runs these)")
@command
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
    as_json: JsonOpt = False,
) -> None:
    """Register the trained model as a new version (alias challenger); make it champion only if it wins."""
    from visionops.contracts.layout import Artifacts
    from visionops.stages.promote import promote as run
    from visionops.tracking import connection

    if replace_champion is not None and not replace_champion.strip():
        raise UserError('--replace-champion needs the reason, e.g. --replace-champion "new task: orientation"')
    r = run(
        load_params(params),
        Artifacts(artifacts),
        data_dir=data,
        out_dir=writable(out_dir),
        replace_champion=replace_champion,
    )
    colour = {
        "promoted": "green",
        "kept": "yellow",
        "rejected": "red",
        "incomparable": "yellow",
        "indistinguishable": "yellow",
    }[r.decision]
    again = " (decided earlier)" if r.already_decided else ""
    lines = [f"promote: {r.registered_model} v{r.version} [{colour}]{r.decision}[/]{again}: {escape(r.reason)}"]
    if r.champion_rescored:
        lines.append(f"  champion v{r.champion_before} was re-scored on this split ({out_dir}/champion_v*/)")
    lines.append(f"  {ui_link(connection.tracking_uri(), model=r.registered_model)}")
    emit(r, as_json, lambda: lines)


@app.command("log-run", rich_help_panel="Pipeline stages (dvc.yaml runs these)")
@command
def log_run(
    params: ParamsOpt = Path("params.yaml"), artifacts: ArtifactsOpt = Path("artifacts"), as_json: JsonOpt = False
) -> None:
    """Log what an MLflow outage kept from the run in artifacts/train/run.json (training and/or evaluation)."""
    from visionops.tracking import connection, runs

    client = connection.connect(consequence="the results stay under artifacts/: rerun `visionops log-run` later")
    run_id, done = runs.log_missing(client, load_params(params), project_root(), artifacts=artifacts)
    line = (
        f"log-run: {' and '.join(done)} logged to run {run_id}" if done else f"log-run: nothing missing in run {run_id}"
    )
    emit({"run_id": run_id, "logged": done}, as_json, lambda: [line])
