"""Benchmark: what the committed recipe learns from random weights, and what `dvc repro` of train + evaluate costs.

For each dataset, a private copy of this checkout gets the dataset as data/ (the embedded sample through
`dvc pull`; a shared dataset copied in), `dvc repro split` runs untimed, then `dvc repro evaluate` (train +
evaluate, logged to the copy's own MLflow store) is timed and its test metrics read from artifacts/evaluate.
``--repeat 2`` reruns train + evaluate from scratch in the same copy (run cache off) to check that a second run's
metrics are identical. Goals (issue 17): accuracy >= 0.95 on the sample, >= 0.70 on shared flowers and clothing,
each within 15 minutes on this machine. The datasets in ../shared/datasets/ are used when present.
Usage: python benchmarks/recipe_quality.py [--datasets sample flowers clothing] [--repeat 2] [--set KEY=VALUE ...]
Writes results/recipe_quality.csv (one row per dataset and repeat; rows of other datasets are kept).
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

HERE = Path(__file__).resolve().parent
SHARED = REPO.parent / "shared" / "datasets"
GOALS = {"sample": 0.95, "flowers": 0.70, "clothing": 0.70}
BUDGET_S = 15 * 60


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


def timed_train_evaluate(project: Path, force: bool) -> tuple[float, dict]:
    """Seconds of `dvc repro evaluate` (train + evaluate) and the test metrics it wrote."""
    start = time.perf_counter()
    sh(["dvc", "repro", "evaluate", *(["--force", "--no-run-cache", "train", "evaluate"] if force else [])], project)
    seconds = time.perf_counter() - start
    metrics = json.loads((project / "artifacts" / "evaluate" / "metrics.json").read_text())
    history = (project / "artifacts" / "train" / "history.csv").read_text().splitlines()
    return seconds, {**metrics, "epochs_run": len(history) - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
            project = prepare(name, args.workdir or Path(tmp), args.set)
            for repeat in range(1, args.repeat + 1):
                seconds, m = timed_train_evaluate(project, force=repeat > 1)
                rows.append(
                    {
                        "dataset": name,
                        "repeat": repeat,
                        "test_images": m["examples"],
                        "epochs_run": m["epochs_run"],
                        "train_evaluate_s": round(seconds, 1),
                        "accuracy": round(m["accuracy"], 4),
                        "macro_f1": round(m["macro_f1"], 4),
                        "ece": round(m["ece"], 4),
                        "goal_accuracy": GOALS[name],
                        "met": m["accuracy"] >= GOALS[name] and seconds <= BUDGET_S,
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
        kept = pd.read_csv(out)
        frame = pd.concat([kept[~kept["dataset"].isin(frame["dataset"])], frame], ignore_index=True)
    frame = frame.sort_values("dataset", key=lambda names: names.map(list(GOALS).index), kind="stable")  # table order
    frame.to_csv(out, index=False)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
