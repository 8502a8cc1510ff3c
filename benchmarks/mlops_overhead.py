"""Benchmark: MLOps overhead = `dvc repro` of train + evaluate / the bare train() + evaluate() calls, same config.

The dvc side pays for what a user of the pipeline pays: two CLI processes (imports), MLflow run creation and
logging (params, per-epoch metrics, artifacts, the model) into the project's sqlite store, and DVC hashing.
The bare side calls the two functions in one process, without MLflow or DVC. Both run in one temporary copy
of the repository (validate and split done first, untimed), bare first, so both read warm files.
The difference is the fixed cost, reported beside the ratio and split into what can be timed alone: the two
stages' process start-up and imports, and `dvc repro` of the now up-to-date stages (status, hashing); the rest is
MLflow logging and DVC caching the outputs.
Configs: committed (params.yaml as it is), long (the committed config with 4x the fine-tuning epochs and early
stopping off, so it really runs 4x longer), tiny (32 px, 1 + 2 epochs, a quick check).
Usage: python benchmarks/mlops_overhead.py [--config committed|long|tiny]
Writes results/mlops_overhead.csv (one row per config). Goal: ratio <= 1.05 on committed and long.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
from dvc.utils.hydra import apply_overrides
from workcopy import commit_all, copy_checkout, sh

from visionops.config import load_params

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY = ["train.image_size=32", "train.head.epochs=1", "train.finetune.epochs=2"]
IMPORTS = "import visionops.train, visionops.evaluate, visionops.tracking, mlflow"
BARE = """
import sys, time
from visionops.config import load_params
from visionops.evaluate import evaluate
from visionops.train import train
p = load_params()
start = time.perf_counter()
train("data", "artifacts/split", p.train, p.augment, "bare/train")
evaluate("bare/train", "data", "artifacts/split", p.evaluate, "bare/evaluate")
print(time.perf_counter() - start)
"""


def overrides(config: str, project: Path) -> list[str]:
    """The params.yaml overrides of ``config`` (long: 4x the committed fine-tuning epochs, no early stop)."""
    if config == "tiny":
        return TINY
    if config == "long":
        epochs = 4 * load_params(project / "params.yaml").train.finetune.epochs
        return [f"train.finetune.epochs={epochs}", f"train.early_stopping_patience={epochs}"]
    return []


def timed(cmd: list[str], cwd: Path) -> float:
    """Seconds ``cmd`` takes."""
    start = time.perf_counter()
    sh(cmd, cwd)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["committed", "long", "tiny"], default="committed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_checkout(Path(tmp) / "project", skip=())
        sh(["git", "init", "-q", "-b", "main"], work)
        if changes := overrides(args.config, work):
            apply_overrides(work / "params.yaml", changes)
        commit_all(work)
        for cmd in (["visionops", "pull-data"], ["dvc", "repro", "-q", "split"]):  # (the in-repo remote `sample`)
            sh(cmd, work)
        bare = float(sh([sys.executable, "-c", BARE], work).strip().splitlines()[-1])
        piped = timed(["dvc", "repro", "evaluate"], work)
        imports = 2 * timed([sys.executable, "-c", IMPORTS], work)  # one process per stage
        dvc_noop = timed(["dvc", "repro", "evaluate"], work)  # up to date: status and hashing only
    fixed = piped - bare
    row = {
        "config": args.config,
        "bare_train_evaluate_s": round(bare, 1),
        "dvc_repro_train_evaluate_s": round(piped, 1),
        "ratio": round(piped / bare, 3),
        "fixed_cost_s": round(fixed, 1),
        "imports_s": round(imports, 1),
        "dvc_status_hashing_s": round(dvc_noop, 1),
        "logging_and_caching_s": round(fixed - imports - dvc_noop, 1),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "date": date.today().isoformat(),
    }
    out = HERE / "results" / "mlops_overhead.csv"
    frame = pd.DataFrame([row])
    if out.is_file():
        frame = pd.concat([pd.read_csv(out).query("config != @row['config']"), frame], ignore_index=True)
    frame.to_csv(out, index=False)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
