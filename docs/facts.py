"""Fill the docs' fact regions from the files the pipeline writes, so no count, score or timing is typed by hand.

A region in README.md, CONTRIBUTING.md or docs/*.md is

    <!-- fact:NAME -->
    (generated text)
    <!-- /fact -->

and NAME is one of :data:`RENDERERS`. Each region is rendered from its source files and stamped with where it came
from. The sources:

* ``artifacts/…``: used only when the file is the one ``dvc.lock`` records (md5 equal), so a region quotes what the
  last ``dvc repro`` wrote, never a stage run by hand with other params. ``git log -S <md5> -- dvc.lock`` finds the
  commit that recorded it.
* ``benchmarks/results/*.csv``: committed; the stamp names the date, cores and machine of the measurement.
* ``dvc dag --md``: the picture of the pipeline in dvc.yaml.

Usage (from the repository root, in the venv)::

    .venv/bin/python docs/facts.py            # rewrite every region whose sources exist; list those it could not fill
    .venv/bin/python docs/facts.py --check    # change nothing; exit 1 when a region differs from what its files say

Regions whose sources are absent (no ``artifacts/`` before the first ``dvc repro``) are listed, never failed, so
``--check`` runs anywhere; ``tests/unit/test_docs.py`` checks the regions of committed sources.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "CONTRIBUTING.md", "docs/*.md")
REGION = re.compile(r"<!-- fact:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /fact -->", re.S)
EPOCH1_GOAL = 1.5  # issue 17: the cache's first epoch against a tf.data pipeline that decodes every epoch
UNFILLED = "_Not filled yet: run `dvc repro`, then `.venv/bin/python docs/facts.py`._\n"


class Missing(Exception):
    """A region's sources cannot be used: the message says which file and what to run."""


# ---------------------------------------------------------------------------------------------------------- sources
def _lock_md5s(root: Path) -> dict[str, str]:
    """Every stage output dvc.lock records: path → md5."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", []) if "md5" in out}


def pipeline_file(root: Path, rel: str) -> tuple[Path, str]:
    """``root/rel`` and its md5, when it is the output dvc.lock records; else :class:`Missing` says why."""
    path = root / rel
    if not path.is_file():
        raise Missing(f"{rel} not found: run `dvc repro`")
    recorded = _lock_md5s(root).get(rel)
    if recorded is None:
        raise Missing(f"dvc.lock records no output {rel}: run `dvc repro`")
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    if actual != recorded:
        raise Missing(f"{rel} (md5 {actual[:8]}) is not the file dvc.lock records ({recorded[:8]}): run `dvc repro`")
    return path, recorded


def pipeline_stamp(*files: tuple[str, str]) -> str:
    """Where pipeline facts came from: each file and the md5 dvc.lock records for it."""
    named = ", ".join(f"`{rel}` (md5 `{md5[:8]}`)" for rel, md5 in files)
    return f"<sub>From {named} as the last `dvc repro` wrote and dvc.lock records it; filled by docs/facts.py.</sub>\n"


def read_csv(root: Path, rel: str) -> tuple[list[dict[str, str]], str]:
    """A committed benchmark CSV's rows, and a stamp naming the file, the date(s), cores and machine."""
    path = root / rel
    if not path.is_file():
        raise Missing(f"{rel} not found: run its benchmark (benchmarks/)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise Missing(f"{rel} has no rows: run its benchmark (benchmarks/)")

    def values(key: str) -> str:
        return ", ".join(sorted({r.get(key, "?") for r in rows}))

    stamp = f"<sub>From `{rel}`: measured {values('date')} on {values('cores')} cores ({values('machine')}).</sub>\n"
    return rows, stamp


def _num(value: str | float, decimals: int = 0) -> str:
    return f"{float(value):,.{decimals}f}"


def _table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n\n"  # a blank line ends the table


# -------------------------------------------------------------------------------------------------------- renderers
def dag(root: Path) -> str:
    """The pipeline as a mermaid chart: ``dvc dag --md`` (GitHub renders it)."""
    local = Path(sys.executable).parent / "dvc"
    dvc = str(local) if local.is_file() else shutil.which("dvc")
    if dvc is None:
        raise Missing("dvc not found: run ./run.sh setup, then use .venv/bin/python")
    proc = subprocess.run([dvc, "dag", "--md"], cwd=root, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or "```mermaid" not in proc.stdout:
        raise Missing(f"`dvc dag --md` failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    return proc.stdout.strip() + "\n<sub>`dvc dag --md` of dvc.yaml; filled by docs/facts.py.</sub>\n"


def _split(root: Path) -> tuple[dict, str]:
    path, md5 = pipeline_file(root, "artifacts/split/split.json")
    return json.loads(path.read_text()), md5


def sample_split(root: Path) -> str:
    """One sentence: images per side of the split, from split.json."""
    info, md5 = _split(root)
    totals = info["totals"]
    sides = " / ".join(f"{totals.get(side, 0):,} {side}" for side in ("train", "val", "test"))
    text = (
        f"The split gives **{sides}** images ({sum(totals.values()):,} in all, {len(info['classes'])} classes, "
        f"split_id `{info['split_id'][:12]}`).\n"
    )
    return text + pipeline_stamp(("artifacts/split/split.json", md5))


def split_table(root: Path) -> str:
    """Images per class and side, from split.json."""
    info, md5 = _split(root)
    sides = ("train", "val", "test")
    rows = []
    for c in info["classes"]:
        counts = [info["counts"].get(side, {}).get(c, 0) for side in sides]
        rows.append([f"`{c}`", *(f"{n:,}" for n in counts), f"{sum(counts):,}"])
    rows.append(["**all**", *(f"**{info['totals'].get(s, 0)}**" for s in sides), f"**{sum(info['totals'].values())}**"])
    warnings = "".join(f"Warning recorded by split: {w}\n\n" for w in info.get("warnings", []))
    table = _table(["class", *sides, "total"], rows, ["---", "---:", "---:", "---:", "---:"])
    return table + warnings + pipeline_stamp(("artifacts/split/split.json", md5))


def validate_summary(root: Path) -> str:
    """Files seen by validate, usable, quarantined (with reasons) and ignored, and images per class."""
    path, md5 = pipeline_file(root, "artifacts/validate/summary.json")
    s = json.loads(path.read_text())
    per_class = ", ".join(f"{name} {n:,}" for name, n in s["classes"].items())
    reasons = "".join(f"; {reason} {n}" for reason, n in sorted(s.get("quarantine_reasons", {}).items()))
    text = (
        f"validate saw {s['files']:,} files: {s['usable']:,} usable, {s['quarantined']:,} quarantined{reasons}, "
        f"{s['ignored']:,} ignored. Usable images per class: {per_class}.\n"
    )
    return text + pipeline_stamp(("artifacts/validate/summary.json", md5))


def metrics_line(root: Path) -> str:
    """The test metrics of the last evaluate, and the epochs the training ran (history.csv)."""
    path, md5 = pipeline_file(root, "artifacts/evaluate/metrics.json")
    m = json.loads(path.read_text())
    top = next((k for k in sorted(m) if re.fullmatch(r"top_\d+_accuracy", k)), None)
    parts = [f"accuracy **{m['accuracy']:.2f}**", f"macro-F1 **{m['macro_f1']:.2f}**"]
    if top:
        parts.append(f"top-{top.split('_')[1]} accuracy {m[top]:.2f}")
    if m.get("roc_auc_ovr") is not None:
        parts.append(f"one-vs-rest ROC-AUC {m['roc_auc_ovr']:.2f}")
    parts.append(f"ECE {m['ece']:.2f}")
    text = f"Test {', '.join(parts)} on {m['examples']:,} test images"
    files = [("artifacts/evaluate/metrics.json", md5)]
    try:
        hist_path, hist_md5 = pipeline_file(root, "artifacts/train/history.csv")
    except Missing:
        text += ".\n"
    else:
        with hist_path.open(newline="") as f:
            stages = [row["stage"] for row in csv.DictReader(f)]
        names = {"1": "head", "2": "fine-tuning"}  # history.csv's stage column
        ran = sorted(set(stages))
        text += (
            f", after {' + '.join(str(stages.count(s)) for s in ran)} epochs "
            f"({' + '.join(names.get(s, s) for s in ran)}).\n"
        )
        files.append(("artifacts/train/history.csv", hist_md5))
    return text + pipeline_stamp(*files)


def train_time(root: Path) -> str:
    """How long train + evaluate of the sample take with the committed params, from the recipe-quality benchmark."""
    rows, stamp = read_csv(root, "benchmarks/results/recipe_quality.csv")
    r = next((r for r in rows if r["dataset"] == "sample" and r["recipe"] == "committed" and not r["overrides"]), None)
    if r is None:
        raise Missing("no `sample` row in benchmarks/results/recipe_quality.csv: run benchmarks/recipe_quality.py")
    return (
        f"Training and evaluating with the committed params took {float(r['train_evaluate_s']) / 60:.1f} min through "
        f"`dvc repro` on {r['cores']} CPU cores ({r['epochs_run']} epochs).\n"
    ) + stamp


def bench_validate(root: Path) -> str:
    """validate's file reading against a cv2.imdecode loop."""
    rows, stamp = read_csv(root, "benchmarks/results/validate_throughput.csv")
    body = [[r["method"], _num(r["images_per_s"]), _num(r["ratio_vs_baseline"], 2)] for r in rows]
    head = f"On `{rows[0]['dataset']}` ({_num(rows[0]['files'])} files):\n\n"
    return head + _table(["method", "images/s", "ratio vs. baseline"], body, ["---", "---:", "---:"]) + stamp


def bench_input(root: Path) -> str:
    """Training input pipelines against the tutorial baseline, and train.py's first epoch against tf-native's."""
    rows, stamp = read_csv(root, "benchmarks/results/input_pipeline.csv")
    body = [
        [
            r["pipeline"],
            _num(r["epoch1_images_per_s"]),
            _num(r["epoch1_ratio_vs_tf_native"], 2),
            _num(r["steady_images_per_s"]),
            _num(r["steady_ratio_vs_baseline"], 2),
        ]
        for r in rows
    ]
    r0 = rows[0]
    head = f"On `{r0['dataset']}` ({_num(r0['images'])} images) at {r0['size']} px, batch {r0['batch']}:\n\n"
    table = _table(
        ["pipeline", "epoch 1 images/s", "epoch 1 vs. tf-native", "steady images/s", "steady vs. baseline"],
        body,
        ["---", *["---:"] * 4],
    )
    ratio = float(next(r for r in rows if "(train.py)" in r["pipeline"])["epoch1_ratio_vs_tf_native"])
    goal = (
        f"Goal: train.py's epoch 1 (decoding and filling the cache included) at least {EPOCH1_GOAL}× tf-native's. "
        f"Measured: **{ratio:.2f}×**, {'met' if ratio >= EPOCH1_GOAL else 'not met'}.\n\n"
    )
    return head + table + goal + stamp


def _seconds(row: dict[str, str], key: str) -> str:
    return f"{_num(row[key], 1)} s" if row.get(key) else "–"  # (rows from before the column existed)


OVERHEAD_SECONDS = {  # mlops_overhead.csv's columns → the table's heads, in order
    "train_work_s": "train()",
    "evaluate_work_s": "evaluate()",
    "dvc_repro_train_evaluate_s": "`dvc repro`",
    "fixed_cost_s": "fixed cost",
    "train_fixed_cost_s": "of it: train",
    "evaluate_fixed_cost_s": "evaluate",
    "imports_s": "imports (2 stages)",
    "dvc_status_hashing_s": "DVC status + hashing",
    "epoch_logging_s": "per-epoch MLflow logging",
    "other_s": "MLflow run + logging, DVC caching",
}


def bench_overhead(root: Path) -> str:
    """`dvc repro` of train + evaluate against the stages' own work in the same run, and what the rest is made of."""
    rows, stamp = read_csv(root, "benchmarks/results/mlops_overhead.csv")
    body = [
        [r["config"], r["epochs"], _num(r["ratio"], 3), *(_seconds(r, key) for key in OVERHEAD_SECONDS)] for r in rows
    ]
    head = ["config", "epochs", "ratio", *OVERHEAD_SECONDS.values()]
    return _table(head, body, ["---", *["---:"] * (len(head) - 1)]) + stamp


RECIPES = {  # recipe_quality.csv's recipes → how the table names them
    "committed": "committed: Lite2, ImageNet weights, 260 px",
    "scratch": "from scratch: B0, random weights, 64 px",
}


def bench_quality(root: Path) -> str:
    """What the committed recipe and the from-scratch one learn on each dataset, against the goals of issue 30."""
    rows, stamp = read_csv(root, "benchmarks/results/recipe_quality.csv")

    def goal(r: dict[str, str]) -> str:
        if not r["goal_accuracy"]:
            return "–"
        met = "met" if r["met"] == "True" else "**not met**"
        return f"≥ {_num(r['goal_accuracy'], 2)} in 10 min: {met}"

    body = [
        [
            RECIPES.get(r["recipe"], r["recipe"]),
            f"`{r['dataset']}`" + (f" (run {r['repeat']})" if r["repeat"] != "1" else ""),
            r["test_images"],
            r["epochs_run"],
            f"{float(r['train_evaluate_s']) / 60:.1f} min",
            f"**{_num(r['accuracy'], 3)}**",
            _num(r["macro_f1"], 3),
            _num(r["ece"], 3),
            goal(r),
        ]
        for r in rows
    ]
    notes = {r["overrides"] for r in rows if r["overrides"]}
    head = "`dvc repro` of train + evaluate, from an empty embedding cache" + (
        f" (overrides: {'; '.join(f'`{n}`' for n in sorted(notes))})" if notes else ""
    )
    header = ["recipe", "dataset", "test images", "epochs", "train + evaluate", "accuracy", "macro-F1", "ECE", "goal"]
    return head + ":\n\n" + _table(header, body, ["---", "---", *["---:"] * 6, "---"]) + stamp


def bench_embedding(root: Path) -> str:
    """The head stage on cached embeddings against running the frozen backbone every epoch."""
    rows, stamp = read_csv(root, "benchmarks/results/embedding_cache.csv")
    r = rows[0]
    body = [
        [
            "baseline: the frozen backbone runs on augmented images every epoch",
            _num(r["baseline_epoch_s"], 1) + " s",
            "1",
        ],
        [
            f"cached embeddings, {r['views']} views per image (train.py)",
            _num(r["cached_epoch_s"], 3) + " s",
            f"**{_num(r['ratio'], 0)}×**",
        ],
    ]
    head = (
        f"Head stage of {r['model']} at {r['size']} px on `{r['dataset']}` ({_num(r['images'])} images), one epoch:\n\n"
    )
    met = "met" if r["met"] == "True" else "**not met**"
    tail = (
        f"Goal: ≥ {r['goal_ratio']}× per epoch: {met}. Embedding the views once took {_num(r['embed_cold_s'], 1)} s "
        f"(paid back after {r['break_even_epochs']} head epochs); reading them back from the cache "
        f"{_num(r['embed_warm_s'], 2)} s.\n\n"
    )
    return head + _table(["head stage", "seconds per epoch", "speed-up"], body, ["---", "---:", "---:"]) + tail + stamp


def bench_sweep(root: Path) -> str:
    """One 4-trial sweep on the local stack with 1 process worker against 2."""
    rows, stamp = read_csv(root, "benchmarks/results/sweep_workers.csv")
    body = [[r["workers"], f"{_num(r['seconds'], 1)} s", _num(r["ratio"], 2)] for r in rows]
    head = f"A sweep of {rows[0]['trials']} trials, `--concurrency {rows[0]['concurrency']}`, tiny project:\n\n"
    return head + _table(["process workers", "sweep wall time", "ratio vs. 1 worker"], body, ["---:"] * 3) + stamp


def bench_training(root: Path) -> str:
    """EfficientNet training images/s with the input pipeline against pre-made in-memory batches, per size."""
    rows, stamp = read_csv(root, "benchmarks/results/training_throughput.csv")
    body = [
        [f"{r['size']} px", r["pipeline"], _num(r["images_per_s"], 1), _num(r["ratio_vs_baseline"], 2)] for r in rows
    ]
    r0 = rows[0]
    head = (
        f"{r0['model']}, every layer training from random weights, on `{r0['dataset']}`: {r0['steps']} steps of "
        f"batch {r0['batch']} per epoch, median of {r0['epochs']} epochs of each input after a warm-up:\n\n"
    )
    table = _table(["size", "input", "training images/s", "ratio vs. in-memory"], body, ["---:", "---", "---:", "---:"])
    return head + table + stamp


def _scaling(root: Path) -> tuple[list[int], dict[str, dict[int, dict[str, str]]], str]:
    """The scaling benchmark's sizes, its rows by stage and size (CSV order), and the stamp."""
    rows, stamp = read_csv(root, "benchmarks/results/scaling.csv")
    stages: dict[str, dict[int, dict[str, str]]] = {}
    for r in rows:
        stages.setdefault(r["stage"], {})[int(r["files"])] = r
    return sorted({int(r["files"]) for r in rows}), stages, stamp


def _fitted(row: dict[str, str], key: str, decimals: int) -> str:
    return _num(row[key], decimals) if row.get(key) else "–"  # (one size only: no line to fit)


def bench_scaling(root: Path) -> str:
    """Seconds and peak memory of each stage against the number of files, the fitted slope, and the cache switch."""
    sizes, stages, stamp = _scaling(root)
    switch, switch_stamp = read_csv(root, "benchmarks/results/scaling_cache_switch.csv")
    body = []
    for stage, by_size in stages.items():
        first = next(iter(by_size.values()))
        seconds = [f"{_num(by_size[n]['seconds'], 1)} s" if n in by_size else "–" for n in sizes]
        rss = " / ".join(_num(by_size[n]["peak_rss_mb"]) if n in by_size else "–" for n in sizes)
        fitted = [_fitted(first, "slope_s_per_1k", 2), _fitted(first, "r2", 3)]
        body.append([stage, *seconds, *fitted, rss, _fitted(first, "rss_mb_per_1k", 1)])
    shown = " / ".join(f"{n:,}" for n in sizes)
    header = ["stage", *(f"{n:,} files" for n in sizes), "s per 1k files (slope)", "R²", f"peak RSS MB ({shown})"]
    table = _table([*header, "MB per 1k files"], body, ["---", *["---:"] * (len(sizes) + 4)])
    validate, decode = stages["validate"], stages["raw decode (baseline)"]
    both = [n for n in sizes if n in validate and n in decode]
    ratios = " / ".join(_num(validate[n]["ratio_vs_decode"], 2) for n in both)
    cpu = " / ".join(f"{float(validate[n]['cpu_s']) / float(decode[n]['cpu_s']):.2f}" for n in both)
    text = (
        f"validate took **{ratios}** × the raw decode's time on the same files ({shown} files; goal ≤ 1.2; "
        f"CPU time {cpu} ×)"
    )
    slopes = [next(iter(s.values()))["slope_s_per_1k"] for s in (validate, decode)]
    if all(slopes):
        text += f", and **{float(slopes[0]) / float(slopes[1]):.2f}** × its cost per 1,000 more files (slopes)"
    limits = ", ".join(f"**{_num(r['switch_files'])}** at {r['image_size']} px" for r in switch)
    text += (
        f".\n\n`runtime.cache: auto` keeps the train + val images in memory up to {limits} (half of the "
        f"{switch[0]['memory_available_gib']} GiB available during the run), on disk beyond.\n\n"
    )
    image = "![seconds and peak RSS against the number of files, per stage](img/scaling.png)\n\n"
    head = f"On generated {next(iter(decode.values()))['photo'].replace('x', '×')} JPEGs:\n\n"
    return head + table + text + image + stamp + switch_stamp


def bench_scaling_summary(root: Path) -> str:
    """The README's lines: each stage's cost per 1,000 more files and which stage's memory grows with them."""
    _, stages, stamp = _scaling(root)
    first = {stage: next(iter(by_size.values())) for stage, by_size in stages.items()}
    if not all(r.get("slope_s_per_1k") for r in first.values()):
        raise Missing("benchmarks/results/scaling.csv has one size only: run benchmarks/scaling.py with several")
    costs = ", ".join(f"{stage} {_num(r['slope_s_per_1k'], 2)} s" for stage, r in first.items())
    (most, top), *rest = sorted(first.items(), key=lambda item: -float(item[1]["rss_mb_per_1k"]))
    others = max(float(r["rss_mb_per_1k"]) for _, r in rest)
    text = (
        f"Cost of 1,000 more photo-sized images: {costs}. Peak memory grows by {_num(top['rss_mb_per_1k'], 1)} MB per "
        f"1,000 images in {most}, by at most {_num(others, 1)} MB in any other stage "
        "([docs/benchmarks.md](docs/benchmarks.md#scaling)).\n\n"
    )
    return text + "![seconds and peak RSS against the number of files, per stage](docs/img/scaling.png)\n\n" + stamp


RENDERERS: dict[str, Callable[[Path], str]] = {
    "dag": dag,
    "sample-split": sample_split,
    "split-table": split_table,
    "validate-summary": validate_summary,
    "test-metrics": metrics_line,
    "train-time": train_time,
    "bench-validate": bench_validate,
    "bench-input": bench_input,
    "bench-overhead": bench_overhead,
    "bench-sweep": bench_sweep,
    "bench-training": bench_training,
    "bench-quality": bench_quality,
    "bench-embedding": bench_embedding,
    "bench-scaling": bench_scaling,
    "bench-scaling-summary": bench_scaling_summary,
}
# Regions whose sources are committed: they can be checked in any checkout (tests/unit/test_docs.py does).
COMMITTED = (
    "dag",
    "bench-validate",
    "bench-input",
    "bench-training",
    "bench-overhead",
    "bench-sweep",
    "bench-quality",
    "bench-embedding",
    "bench-scaling",
    "bench-scaling-summary",
)


# ------------------------------------------------------------------------------------------------------------- run
@dataclass
class Report:
    """What a pass over the docs found: regions rewritten (or, with --check, stale), up to date, not filled."""

    changed: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    unfilled: list[str] = field(default_factory=list)


def doc_files(root: Path) -> list[Path]:
    """README.md, CONTRIBUTING.md and docs/*.md under ``root``, those that exist."""
    return [Path(p) for pattern in DOCS for p in sorted(glob.glob(str(root / pattern)))]


def update(root: Path = ROOT, check: bool = False, only: tuple[str, ...] | None = None) -> Report:
    """Render every fact region of the docs under ``root``; write the changes unless ``check``.

    Args:
        root: the repository root (its docs, artifacts/, dvc.lock and benchmarks/ are read).
        check: change nothing; regions that differ are reported in ``changed``.
        only: render only these region names (others are left out of the report).

    Raises:
        ValueError: a region names no known renderer.
    """
    report = Report()
    cache: dict[str, str | Missing] = {}  # each region's text, or why it cannot be filled
    for doc in doc_files(root):
        text = doc.read_text()

        def fill(match: re.Match[str], doc: Path = doc) -> str:
            name = match["name"]
            where = f"{doc.relative_to(root)}: fact:{name}"
            if name not in RENDERERS:
                raise ValueError(f"{where}: unknown region; known: {', '.join(RENDERERS)}")
            if only is not None and name not in only:
                return match[0]
            if name not in cache:
                try:
                    cache[name] = RENDERERS[name](root)
                except Missing as e:
                    cache[name] = e
            rendered = cache[name]
            if isinstance(rendered, Missing):
                report.unfilled.append(f"{where}: {rendered}")
                return match[0]
            (report.current if rendered == match["body"] else report.changed).append(where)
            return f"<!-- fact:{name} -->\n{rendered}<!-- /fact -->"

        new = REGION.sub(fill, text)
        if new != text and not check:
            doc.write_text(new)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a region is out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    try:
        report = update(args.root, check=args.check)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    verb = "out of date" if args.check else "rewritten"
    for where in report.changed:
        print(f"{verb}: {where}")
    for where in report.unfilled:
        print(f"not filled: {where}", file=sys.stderr)
    print(f"{len(report.current)} up to date, {len(report.changed)} {verb}, {len(report.unfilled)} not filled")
    if args.check and report.changed:
        print("run `.venv/bin/python docs/facts.py` and commit the docs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
