"""Benchmark: cost as data grows. Wall time and peak memory of validate, split, the image cache and evaluate on 1k, 10k
and 50k generated photo-sized JPEGs, against the raw decode of the same files on all cores, in the same run.

Images: the project's generator (``visionops sample-data``) at 500×375, JPEG quality 90, 4 classes. Each stage runs
in a fresh process, on files already in the page cache; its seconds exclude interpreter start and imports. Peak RSS
is that process's high-water mark (``ru_maxrss``; forked workers count as their own largest, not summed).

* raw decode (the baseline): ``cv2.imdecode`` of every file in full, one forked process per core;
* validate: ``visionops.stages.validate.validate`` with the committed params (what ``dvc repro validate`` runs);
* split: ``visionops.stages.split.split`` on validate's manifest;
* cache fill (memory / disk): ``cache_images`` of every file at the committed ``train.image_size`` × margin;
* evaluate: ``visionops.stages.evaluate.evaluate`` of an untrained EfficientNet at the committed size on the test split
  (its cost is decoding and inference, not what the model knows).

Usage: python benchmarks/scaling.py [--sizes 1000 10000 50000] [--work DIR]
--work keeps the generated images there and reuses them in later runs; by default they go to a temporary folder
(/tmp/scaling-*) that is removed at the end.
Writes results/scaling.csv (a row per stage and size, with each stage's linear fit over the sizes),
results/scaling_cache_switch.csv (where ``runtime.cache: auto`` switches to disk, at 48, 128 and 224 px, with the memory
available during the run) and docs/img/scaling.png.
Goals: every stage linear in the number of files; validate within 1.2× of the raw decode; peak memory flat in the
number of files except for the memory cache.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PHOTO = (500, 375)  # width × height: a typical web photo (Oxford pets, PASCAL VOC)
STAGES = {  # name in the CSV → what the child process runs
    "raw decode (baseline)": "decode",
    "validate": "validate",
    "split": "split",
    "cache fill (memory)": "cache-memory",
    "cache fill (disk)": "cache-disk",
    "evaluate": "evaluate",
}
SWITCH_SIZES = (128, 224)  # train.image_size beside the committed one: a mid size, B0's default


# ----------------------------------------------------------------------------------------------- child processes
def _decode(path: Path) -> None:
    cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)


def decode_all(files: list[Path]) -> None:
    """The baseline: decode every file in full with OpenCV, one forked process per core."""
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_decode, files, chunksize=64))


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its waited-for children: less sensitive to other load."""
    return sum(
        u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def _peak_rss_mb() -> float:
    """This process's memory high-water mark, or its largest waited-for child's (Linux reports kB)."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def prepare(stage: str, data: Path, out: Path, model: Path) -> tuple[Callable[[], object], int, str]:
    """What the child process for ``stage`` times: (the call, files it reads, cache mode).

    Imports are inside: each stage's process imports only what it needs (validate forks its readers, which is safe
    only without TensorFlow's threads), and they stay out of the timed part.
    """
    from visionops.files import image_files
    from visionops.params import load_params

    params = load_params(REPO / "params.yaml")
    files = image_files(data)
    if stage == "decode":
        return functools.partial(decode_all, files), len(files), ""
    if stage == "validate":
        from visionops.stages.validate import validate

        return functools.partial(validate, data, params.validate_, out / "validate"), len(files), ""
    if stage == "split":
        from visionops.stages.split import split

        manifest = out / "validate" / "manifest.csv"
        return functools.partial(split, manifest, params.split, out / "split", data), len(files), ""
    if stage in ("cache-memory", "cache-disk"):
        from visionops.contracts.model import ModelInfo
        from visionops.data.cache import cache_images

        side = ModelInfo.read(model).resize_side  # the committed image_size × resize_margin, as train computed it
        where = out / "cache" if stage == "cache-disk" else None
        return functools.partial(cache_images, files, side, cache_dir=where), len(files), stage.split("-")[1]
    if stage == "evaluate":
        from visionops.contracts.data import read_split
        from visionops.stages.evaluate import evaluate

        tested = len(read_split(out / "split")[0]["test"])
        return functools.partial(evaluate, model, data, out / "split", params.evaluate, out / "evaluate"), tested, ""
    raise ValueError(f"unknown stage {stage}")


def measure(stage: str, data: Path, out: Path, model: Path) -> dict:
    """Run one stage on ``data`` (its outputs under ``out``): its seconds, files read and memory."""
    run, files, cache = prepare(stage, data, out, model)
    base, cpu = _peak_rss_mb(), _cpu_s()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_s": _cpu_s() - cpu,
        "stage_files": files,
        "base_rss_mb": base,
        "peak_rss_mb": _peak_rss_mb(),
        "cache": cache,
    }


def setup_model(model: Path) -> dict:
    """Save an untrained classifier at the committed size (model.keras + classes.json) for evaluate to score.

    Returns:
        Where ``runtime.cache: auto`` switches to disk at the committed size and each of :data:`SWITCH_SIZES`, with the
        memory available now.
    """
    from visionops.contracts.model import ModelInfo
    from visionops.data.cache import MEMORY_SHARE, available_memory, memory_cache_limit
    from visionops.data.sample import SHAPES
    from visionops.params import load_params
    from visionops.training.model import build_model
    from visionops.training.weights import build_backbone

    params = load_params(REPO / "params.yaml").train.model_copy(update={"weights": None})
    backbone, _ = build_backbone(params)
    build_model(backbone, len(SHAPES), params.dropout).save(model / "model.keras")
    info = ModelInfo.for_task(
        params.task, sorted(SHAPES), image_size=params.size, resize_side=params.cached_side, model=params.model
    )
    info.write(model)
    memory = available_memory()
    switch = []
    for size in (params.size, *SWITCH_SIZES):
        side = params.model_copy(update={"image_size": size}).cached_side
        switch.append(
            {
                "image_size": size,
                "cached_side": side,
                "kb_per_image": round(side * side * 3 / 1024, 1),
                "memory_available_gib": round(memory / 2**30, 1),
                "memory_share": MEMORY_SHARE,
                "switch_files": memory_cache_limit(side),
            }
        )
    return {"switch": switch}


# ------------------------------------------------------------------------------------------------------ the parent
def in_child(*args: str) -> dict:
    """Run this script with ``args`` in a fresh process; the JSON it prints last."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def images(work: Path, files: int) -> Path:
    """A class-per-folder set of ``files`` generated photos under ``work``, reused when a complete one is there."""
    from visionops.data.sample import SHAPES, generate_sample

    folder = work / f"images-{PHOTO[0]}x{PHOTO[1]}-{files}"
    per_class = files // len(SHAPES)
    if sum(1 for _ in folder.rglob("*.jpg")) != per_class * len(SHAPES):  # absent, or cut short by a killed run
        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        generate_sample(folder, per_class, size=PHOTO[0], height=PHOTO[1], workers=os.cpu_count() or 1)
        print(f"generated {files} images in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return folder


def fit(frame: pd.DataFrame) -> pd.DataFrame:
    """Per stage: the least-squares line of seconds (and peak RSS) against thousands of files, and its R²."""
    rows = []
    for stage, group in frame.groupby("stage", sort=False):
        x = group["files"] / 1000
        row = {"stage": stage, "slope_s_per_1k": np.nan, "intercept_s": np.nan, "r2": np.nan, "rss_mb_per_1k": np.nan}
        if x.nunique() > 1:
            slope, intercept = np.polyfit(x, group["seconds"], 1)
            row.update(
                slope_s_per_1k=slope, intercept_s=intercept, rss_mb_per_1k=np.polyfit(x, group["peak_rss_mb"], 1)[0]
            )
        if x.nunique() > 2:  # (a line through two points fits them exactly: R² says nothing)
            residual = group["seconds"] - (slope * x + intercept)
            row["r2"] = 1 - (residual**2).sum() / ((group["seconds"] - group["seconds"].mean()) ** 2).sum()
        rows.append(row)
    return pd.DataFrame(rows).round({"slope_s_per_1k": 4, "intercept_s": 3, "r2": 4, "rss_mb_per_1k": 3})


def plot(frame: pd.DataFrame, target: Path) -> None:
    """Seconds and peak RSS against files, one line per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for stage, group in frame.groupby("stage", sort=False):
        left.plot(group["files"], group["seconds"], marker="o", label=stage)
        right.plot(group["files"], group["peak_rss_mb"], marker="o", label=stage)
    left.set(xlabel="files", ylabel="seconds", title="wall time")
    right.set(xlabel="files", ylabel="MB", title="peak RSS of the stage's process")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="x", style="plain")
    left.legend(fontsize=8)
    fig.suptitle(f"{PHOTO[0]}×{PHOTO[1]} JPEGs, {os.cpu_count()} cores", fontsize=10)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000], help="files per set")
    parser.add_argument("--work", type=Path, default=None, help="keep (and reuse) the generated images here")
    parser.add_argument("--child", nargs=4, metavar=("STAGE", "DATA", "OUT", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, data, out, model = args.child
        result = setup_model(Path(model)) if stage == "setup" else measure(stage, Path(data), Path(out), Path(model))
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="scaling-", dir="/tmp") as tmp:
        work = args.work or Path(tmp)
        model = work / "model"
        model.mkdir(parents=True, exist_ok=True)
        switch = pd.DataFrame(in_child("--child", "setup", "-", "-", str(model))["switch"])
        rows = []
        for files in sorted(set(args.sizes)):
            data = images(work, files)
            for path in data.rglob("*.jpg"):
                path.read_bytes()  # every stage reads from the page cache
            out = work / f"out-{files}"
            for name, stage in STAGES.items():
                rows.append(
                    {"stage": name, "files": files, **in_child("--child", stage, str(data), str(out), str(model))}
                )
                print(f"{files:>7} files  {name:<22} {rows[-1]['seconds']:8.2f} s", file=sys.stderr)
            shutil.rmtree(out)
    frame = pd.DataFrame(rows)
    decode = frame[frame["stage"] == "raw decode (baseline)"].set_index("files")["seconds"]
    frame["files_per_s"] = (frame["stage_files"] / frame["seconds"]).round(1)
    frame["ratio_vs_decode"] = (frame["seconds"] / frame["files"].map(decode)).round(3)
    frame = frame.round({"seconds": 3, "cpu_s": 3, "base_rss_mb": 1, "peak_rss_mb": 1})
    frame = frame.merge(fit(frame), on="stage", how="left")
    stamp = {"photo": f"{PHOTO[0]}x{PHOTO[1]}", "cores": os.cpu_count(), "machine": platform.machine()}
    stamp["date"] = date.today().isoformat()
    results = HERE / "results"
    results.mkdir(parents=True, exist_ok=True)
    frame.assign(**stamp).to_csv(results / "scaling.csv", index=False)
    switch.assign(**{k: v for k, v in stamp.items() if k != "photo"}).to_csv(
        results / "scaling_cache_switch.csv", index=False
    )
    plot(frame, REPO / "docs" / "img" / "scaling.png")
    columns = ["stage", "files", "seconds", "cpu_s", "ratio_vs_decode", "peak_rss_mb", "slope_s_per_1k", "r2"]
    print(frame[columns].to_markdown(index=False))
    print(switch.to_markdown(index=False))


if __name__ == "__main__":
    main()
