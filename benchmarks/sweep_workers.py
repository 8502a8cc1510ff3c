"""Benchmark: the wall time of one 4-trial sweep on the local stack with 1 process worker, then with 2.

Each side gets a project of its own (a copy of this checkout with a generated dataset of 4 classes × 12 images of
48 px, 32-px B0, 1 + 1 epochs; its own DVC remote), so neither side restores the other's trials from DVC's run
cache. Both run `visionops stack up --workers N`, `stack deploy` and the same sweep with `--concurrency 2`
(`-S 'train.seed=1,2,3,4'`): one worker runs the trials one after the other, two run two at a time. Timed: the sweep
command, from start to its table and its one promotion.
Usage: python benchmarks/sweep_workers.py [--workdir DIR [--keep]]   (--keep: leave the 2-worker stack up, e.g. for
docs/screenshots.sh; stop it with `visionops stack down` in DIR/w2/project)
Writes results/sweep_workers.csv. Goal: ratio (2 workers / 1) <= 0.7.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
import yaml
from workcopy import commit_all, copy_checkout, sh

HERE = Path(__file__).resolve().parent
SWEEP = ["-S", "train.seed=1,2,3,4", "--concurrency", "2"]
TINY = {"image_size": 32, "batch_size": 16, "workers": 1, "head": {"epochs": 1}, "finetune": {"epochs": 1}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project(dest: Path) -> Path:
    """A committed copy of this checkout with a tiny generated dataset pushed to its own DVC remote."""
    copy_checkout(dest, skip=("dvc-remote/", "data/"))
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"].update(TINY)
    params["promote"]["min_metric"] = None
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "data.dvc").unlink()
    sh(["visionops", "sample-data", "--out", "data", "--per-class", "12", "--size", "48"], dest)
    sh(["git", "init", "-q", "-b", "main"], dest)
    for cmd in (
        ["dvc", "remote", "add", "-f", "-d", "sample", str(dest.parent / "remote")],
        ["dvc", "add", "-q", "data"],
        ["dvc", "push", "-q"],
    ):
        sh(cmd, dest)
    commit_all(dest)
    return dest


def timed_sweep(workers: int, base: Path, keep: bool = False) -> float:
    root = project(base / f"w{workers}" / "project")
    ports = ["--mlflow-port", str(free_port()), "--prefect-port", str(free_port())]
    sh(["visionops", "stack", "up", "--workers", str(workers), *ports], root)
    try:
        sh(["visionops", "stack", "deploy"], root)
        start = time.perf_counter()
        sh(["visionops", "stack", "exec", sys.executable, "flows/sweep.py", *SWEEP], root)
        return time.perf_counter() - start
    finally:
        if not keep:
            sh(["visionops", "stack", "down"], root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keep the two projects here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="leave the 2-worker stack running (needs --workdir)")
    args = parser.parse_args()
    if args.keep and not args.workdir:
        parser.error("--keep needs --workdir: a temporary folder is removed at the end")
    with tempfile.TemporaryDirectory(prefix="visionops-bench-sweep-") as tmp:
        base = args.workdir or Path(tmp)
        one, two = timed_sweep(1, base), timed_sweep(2, base, args.keep)
    rows = [
        {"workers": 1, "seconds": round(one, 1), "ratio": 1.0},
        {"workers": 2, "seconds": round(two, 1), "ratio": round(two / one, 3)},
    ]
    frame = pd.DataFrame(rows).assign(
        trials=4, concurrency=2, date=date.today().isoformat(), cores=os.cpu_count(), machine=platform.machine()
    )
    out = HERE / "results" / "sweep_workers.csv"
    frame.to_csv(out, index=False)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
