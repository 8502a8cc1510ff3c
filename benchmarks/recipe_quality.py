"""Benchmark: what a recipe learns on each dataset, and what `dvc repro` of train + evaluate costs, cold.

Recipes: ``committed`` (params.yaml as it is: EfficientNet-Lite0 fine-tuned from the packaged ImageNet weights) and
``scratch`` (:data:`SCRATCH`: EfficientNet-B0 from random weights at 64 px, the recipe committed until 2026-12-07),
side by side. For each dataset, a private copy of this checkout gets the dataset as data/ (the embedded sample
through `dvc pull`; a shared dataset copied in), `dvc repro split` runs untimed, then `dvc repro evaluate` (train +
evaluate, logged to the copy's own MLflow store) is timed, with an empty embedding cache (what a first run on a new
machine pays), and its test metrics read from artifacts/evaluate. ``--repeat 2`` reruns train + evaluate in the same
copy (run cache off; the embeddings of the first run reused) to check that a second run's metrics are identical.
Goals (issue 30), with the committed params, each within 10 minutes on this machine: test accuracy >= 0.98 on the
sample, >= 0.92 on shared flowers, >= 0.85 on shared clothing. The datasets in ../shared/datasets/ are used when
present.
Usage: python benchmarks/recipe_quality.py [--recipe committed|scratch] [--datasets sample flowers clothing]
       [--repeat 2] [--set KEY=VALUE ...]
Writes results/recipe_quality.csv (one row per recipe, dataset and repeat; the other rows are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
from dvc.utils.hydra import apply_overrides
from workcopy import REPO, commit_all, copy_checkout, sh

from visionops.training.embeddings import CACHE_ENV

HERE = Path(__file__).resolve().parent
SHARED = REPO.parent / "shared" / "datasets"
GOALS = {"sample": 0.98, "flowers": 0.92, "clothing": 0.85}
BUDGET_S = 10 * 60
RECIPES = ("committed", "scratch")
SCRATCH = [  # the recipe committed until 2026-12-07: B0 from random weights at 64 px, 60 epochs of the whole network
    "train.model=EfficientNetB0",
    "train.weights=null",
    "train.image_size=64",
    "train.head.epochs=0",
    "train.finetune.epochs=60",
    "train.finetune.learning_rate=0.002",
    "train.finetune.schedule=cosine",
    "train.finetune.warmup_epochs=3",
    "train.finetune.unfreeze_blocks=all",
    "train.early_stopping_patience=60",
]


def prepare(name: str, work: Path, overrides: list[str]) -> Path:
    """A committed copy of the checkout whose data/ is dataset ``name``, split done."""
    project = copy_checkout(work / name, skip=("dvc-remote/", "data/"))
    sh(["git", "init", "-q", "-b", "main"], project)
    if name == "sample":
        shutil.copytree(REPO / "dvc-remote", project / "dvc-remote")  # the sample's committed local remote
        sh(["visionops", "pull-data"], project)  # from the in-repo remote `sample`, as `./run.sh pipeline` does
    else:
        not_images = shutil.ignore_patterns("*.md", "*.tsv", "LICENSE*", ".*")
        shutil.copytree(SHARED / name, project / "data", ignore=not_images)
        sh(["dvc", "add", "-q", "data"], project)
    if overrides:
        apply_overrides(project / "params.yaml", overrides)
    commit_all(project)
    sh(["dvc", "repro", "-q", "split"], project)
    return project


def timed_train_evaluate(project: Path, force: bool, cache: Path) -> tuple[float, dict]:
    """Seconds of `dvc repro evaluate` (train + evaluate) and the test metrics it wrote; embeddings in ``cache``."""
    start = time.perf_counter()
    again = ["--force", "--no-run-cache", "train", "evaluate"] if force else []
    sh(["dvc", "repro", "evaluate", *again], project, env={CACHE_ENV: str(cache)})
    seconds = time.perf_counter() - start
    metrics = json.loads((project / "artifacts" / "evaluate" / "metrics.json").read_text())
    history = (project / "artifacts" / "train" / "history.csv").read_text().splitlines()
    return seconds, {**metrics, "epochs_run": len(history) - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="committed", choices=RECIPES)
    parser.add_argument("--datasets", nargs="+", default=list(GOALS), choices=list(GOALS))
    parser.add_argument("--repeat", type=int, default=1, help="train + evaluate this many times per dataset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params.yaml override")
    parser.add_argument("--workdir", type=Path, help="keep the copies here (default: a temporary folder)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="visionops-bench-quality-") as tmp:
        for name in args.datasets:
            if name != "sample" and not (SHARED / name).is_dir():
                print(f"skipping {name}: {SHARED / name} is absent")
                continue
            overrides = (SCRATCH if args.recipe == "scratch" else []) + args.set
            project = prepare(name, args.workdir or Path(tmp), overrides)
            cache = Path(tmp) / f"cache-{name}"  # empty for the first run, as on a new machine
            for repeat in range(1, args.repeat + 1):
                seconds, m = timed_train_evaluate(project, force=repeat > 1, cache=cache)
                rows.append(
                    {
                        "recipe": args.recipe,
                        "dataset": name,
                        "repeat": repeat,
                        "test_images": m["examples"],
                        "epochs_run": m["epochs_run"],
                        "train_evaluate_s": round(seconds, 1),
                        "accuracy": round(m["accuracy"], 4),
                        "macro_f1": round(m["macro_f1"], 4),
                        "ece": round(m["ece"], 4),
                        "goal_accuracy": GOALS[name] if args.recipe == "committed" else "",
                        "met": m["accuracy"] >= GOALS[name] and seconds <= BUDGET_S
                        if args.recipe == "committed"
                        else "",
                        "overrides": " ".join(args.set),
                        "cores": os.cpu_count(),
                        "machine": platform.machine(),
                        "date": date.today().isoformat(),
                    }
                )
                print(rows[-1])
    out = HERE / "results" / "recipe_quality.csv"
    frame = pd.DataFrame(rows)
    if out.is_file():
        kept = pd.read_csv(out, keep_default_na=False)
        replaced = kept["recipe"].eq(args.recipe) & kept["dataset"].isin(frame["dataset"])
        frame = pd.concat([kept[~replaced], frame], ignore_index=True)
    rank = {pair: i for i, pair in enumerate((r, d) for r in RECIPES for d in GOALS)}  # table order
    frame = frame.iloc[sorted(range(len(frame)), key=lambda i: rank[tuple(frame.iloc[i][["recipe", "dataset"]])])]
    frame.to_csv(out, index=False)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
