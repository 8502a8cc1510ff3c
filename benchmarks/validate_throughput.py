"""Benchmark: validate throughput (images/s) against a single-process cv2.imdecode loop, same files, same run.

Usage: python benchmarks/validate_throughput.py [--data DIR] [--repeats 3]
Data: ../shared/datasets/clothing when present, otherwise the embedded sample generated into a temp folder.
Writes benchmarks/results/validate_throughput.csv (one row per method; ratio = images/s / baseline images/s).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from visionops.config import ValidateParams
from visionops.data.probe import probe_file
from visionops.stages.validate import list_files, scan, validate

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "datasets" / "clothing"


def baseline_imdecode(files: list[Path]) -> None:
    """The common tutorial loop: read each file and decode it fully with OpenCV, one process, one thread."""
    for path in files:
        cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)


def probe_threads(root: Path, files: list[Path], workers: int) -> None:
    """The same probe as validate, on a thread pool instead of processes (the alternative we measured)."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(partial(probe_file, root=root, max_pixels=ValidateParams().max_pixels), files))


def timed(func, repeats: int) -> float:
    """Median wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or (SHARED if SHARED.is_dir() else None)
        if root is None:
            from visionops.data.sample import generate_sample

            root = Path(tmp) / "data"
            generate_sample(root)
        files = [f for f in list_files(root)[0] if not f.name.startswith(".") and f.suffix.lower() != ".md"]
        baseline_imdecode(files)  # warm the page cache so every method reads from memory
        cores = os.cpu_count() or 1
        params = ValidateParams(min_images_per_class=1, max_imbalance_ratio=1000)
        methods = {
            "baseline: cv2.imdecode loop, 1 process": lambda: baseline_imdecode(files),
            "probe, 1 process": lambda: scan(root, params.max_pixels, workers=1),
            f"probe, {cores} threads": lambda: probe_threads(root, files, cores),
            f"probe, {cores} forked processes (validate's choice)": lambda: scan(
                root, params.max_pixels, workers=cores
            ),
            f"validate stage end to end ({cores} forked processes + GE suites + Data Docs)": lambda: validate(
                root, params, Path(tmp) / "out", workers=cores
            ),
        }
        rows = []
        for name, func in methods.items():
            seconds = timed(func, args.repeats)
            rows.append({"method": name, "seconds": round(seconds, 3), "images_per_s": round(len(files) / seconds, 1)})
            print(f"{name:<75} {rows[-1]['images_per_s']:>8} img/s", file=sys.stderr)
    frame = pd.DataFrame(rows)
    frame["ratio_vs_baseline"] = (frame["images_per_s"] / frame["images_per_s"].iloc[0]).round(2)
    dataset = "shared/datasets/clothing" if root == SHARED else str(root)
    frame.insert(0, "dataset", dataset if args.data is None else str(args.data))
    frame.insert(1, "files", len(files))
    frame["cores"], frame["machine"], frame["date"] = cores, platform.machine(), date.today().isoformat()
    out = HERE / "results" / "validate_throughput.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    print(frame[["method", "images_per_s", "ratio_vs_baseline"]].to_markdown(index=False))


if __name__ == "__main__":
    main()
