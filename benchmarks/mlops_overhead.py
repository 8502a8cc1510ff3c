"""Benchmark: MLOps overhead = `dvc repro` of train + evaluate / the bare train() + evaluate() calls, same config.

The dvc side pays for what a user of the pipeline pays: two CLI processes (imports), MLflow run creation and
logging (params, per-epoch metrics, artifacts, the model) into the project's sqlite store, and DVC hashing.
The bare side calls the two functions in one process, without MLflow or DVC. Both run in one temporary copy
of the repository (validate and split done first, untimed), bare first, so both read warm files.
Usage: python benchmarks/mlops_overhead.py [--tiny]   (--tiny: 32 px, 1 + 2 epochs, for a quick check)
Writes results/mlops_overhead.csv. Goal: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TINY = ["train.image_size=32", "train.head.epochs=1", "train.finetune.epochs=2"]
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


def sh(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "project"
        listed = sh(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO)
        for rel in filter(None, listed.split("\0")):
            if (REPO / rel).is_file():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, work / rel)
        setup = [
            ["git", "init", "-q"],
            ["git", "add", "-A"],
            ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"],
            ["dvc", "pull", "-q", "data.dvc"],
            ["dvc", "repro", "-q", "split"],
        ]
        for cmd in setup:
            sh(cmd, work)
        if args.tiny:
            sh([sys.executable, "-c", _override(TINY)], work)
        bare = float(sh([sys.executable, "-c", BARE], work).strip().splitlines()[-1])
        start = time.perf_counter()
        sh(["dvc", "repro", "evaluate"], work)
        piped = time.perf_counter() - start
    row = {
        "config": "tiny" if args.tiny else "committed params.yaml",
        "bare_train_evaluate_s": round(bare, 1),
        "dvc_repro_train_evaluate_s": round(piped, 1),
        "ratio": round(piped / bare, 3),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "date": date.today().isoformat(),
    }
    out = HERE / "results" / "mlops_overhead.csv"
    frame = pd.DataFrame([row])
    if out.is_file():
        frame = pd.concat([pd.read_csv(out).query("config != @row['config']"), frame], ignore_index=True)
    frame.to_csv(out, index=False)
    print(frame.to_markdown(index=False))


def _override(settings: list[str]) -> str:
    """Python that edits params.yaml in the temporary copy (nested keys like train.head.epochs=1)."""
    return (
        "import yaml; p = yaml.safe_load(open('params.yaml'))\n"
        f"for item in {settings!r}:\n"
        "    key, value = item.split('='); *path, last = key.split('.'); d = p\n"
        "    for k in path: d = d[k]\n"
        "    d[last] = yaml.safe_load(value)\n"
        "yaml.safe_dump(p, open('params.yaml', 'w'), sort_keys=False)\n"
    )


if __name__ == "__main__":
    main()
