"""The validate stage: scan data/, judge every file with Great Expectations, quarantine, report.

Reads ``data/<label>/**`` and writes into the output folder (``artifacts/validate/`` by default):
``manifest.csv`` (every file, with status and reason), ``quarantine.csv``, ``summary.json``,
``params.json`` (the resolved thresholds) and ``data_docs/index.html``. Nothing under data/ is ever
moved, changed or deleted: quarantined files are only listed, and later stages read the manifest.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import threading
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
from rich.progress import Progress

from visionops.config import ValidateParams
from visionops.contracts.data import MANIFEST_FILE, write_manifest
from visionops.contracts.results import write_resolved
from visionops.data.dvccache import check_checkouts
from visionops.data.expectations import Failure, classes_suite, files_suite, run_suites
from visionops.data.probe import FileFacts, probe_file, shown
from visionops.errors import UserError
from visionops.files import atomic_write_text, is_hidden, is_inside, write_json

MANIFEST_COLUMNS = [
    "path",
    "label",
    "sha256",
    "bytes",
    "format",
    "width",
    "height",
    "channels",
    "mode",
    "bit_depth",
    "exif_orientation",
    "status",
    "reason",
    "note",
]
INT_COLUMNS = ["bytes", "width", "height", "channels", "bit_depth", "exif_orientation"]
PROGRESS_FROM = 200  # files; smaller folders finish before a bar is worth drawing


class ValidationFailed(UserError):
    """The dataset as a whole is unusable (too few classes or images, imbalance). The message says how to fix it."""


@dataclass(frozen=True)
class ValidationReport:
    """What validate found: the manifest, the usable class names, and the summary written to summary.json."""

    manifest: pd.DataFrame
    classes: list[str]
    summary: dict


def list_files(root: Path) -> tuple[list[Path], list[FileFacts]]:
    """Walk ``root`` without following symlinked folders.

    Returns:
        (files to probe, facts for symlinked folders).
    """
    files: list[Path] = []
    folder_links: list[FileFacts] = []
    for top, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        here = Path(top)
        for name in list(dirs):
            sub = here / name
            if sub.is_symlink():
                rel = sub.relative_to(root)
                where = "inside" if is_inside(sub, root) else "outside"
                label = shown(Path(rel.parts[0])) if len(rel.parts) > 1 else None
                facts = FileFacts(path=shown(rel) + "/", label=label)
                if where == "inside" or is_hidden(rel):
                    facts.ignored = f"symlinked folder {where} data/: not followed"
                else:
                    facts.error = "symlink_outside_data: a symlinked folder; not read. Copy its files into data/"
                folder_links.append(facts)
                dirs.remove(name)
        files.extend(here / n for n in sorted(names))
    return files, folder_links


def empty_class_folders(root: Path) -> list[str]:
    """Names of the top-level class folders of ``root`` that hold no visible file."""
    empty = []
    for entry in sorted(root.iterdir()):
        visible = entry.is_dir() and not entry.is_symlink() and not is_hidden(entry.relative_to(root))
        if visible and not any(f.is_file() and not is_hidden(f.relative_to(root)) for f in entry.rglob("*")):
            empty.append(shown(Path(entry.name)))
    return empty


def scan(root: Path, max_pixels: int, workers: int | None = None) -> list[FileFacts]:
    """Probe every file under ``root`` on ``workers`` processes (all cores by default), sorted by path.

    Forked processes where that is safe (a single-threaded parent, as in the CLI), threads otherwise:
    hashing and Pillow release the GIL only in part, so processes scale better
    (benchmarks/validate_throughput.py), and ``fork`` starts them in milliseconds where ``spawn`` would
    re-import the caller's modules in every worker.
    """
    files, facts = list_files(root)
    workers = max(1, min(workers or os.cpu_count() or 1, len(files) // 64 + 1))  # tiny folders: no pool
    probe = partial(probe_file, root=root, max_pixels=max_pixels)
    with contextlib.ExitStack() as stack:
        # The pool first: the progress bar starts a refresh thread, after which forking is no longer safe.
        pool = stack.enter_context(_pool(workers)) if workers > 1 else None
        progress = stack.enter_context(Progress(disable=len(files) < PROGRESS_FROM, transient=True))
        task = progress.add_task("validate: reading images", total=len(files))
        for result in pool.map(probe, files, chunksize=32) if pool else map(probe, files):
            facts.append(result)
            progress.advance(task)
    return sorted(facts, key=lambda f: f.path)


def _pool(workers: int) -> Executor:
    if threading.active_count() == 1:  # fork is safe only when no other thread could hold a lock
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


def _file_table(facts: list[FileFacts]) -> pd.DataFrame:
    frame = pd.DataFrame([f.as_row() for f in facts], columns=list(FileFacts.__dataclass_fields__))
    for column in INT_COLUMNS:
        frame[column] = frame[column].astype("Int64")  # nullable: failed files have no size
    frame["pixels"] = frame["width"] * frame["height"]
    frame["min_side"] = frame[["width", "height"]].min(axis=1, skipna=False)
    usable = frame["error"].isna() & frame["ignored"].isna()
    # Each content's distinct labels; joined in Python only where there are several (a per-group lambda over
    # every file would be the slowest line of validate at 50k files).
    pairs = frame.loc[usable, ["sha256", "label"]].drop_duplicates().sort_values(["sha256", "label"])
    count = pairs.groupby("sha256").size()
    names = pairs.drop_duplicates("sha256").set_index("sha256")["label"]
    shared = pairs[pairs["sha256"].isin(count.index[count > 1])]
    names.update(shared.groupby("sha256")["label"].agg(", ".join))
    frame["labels_for_content"] = frame["sha256"].map(count).where(usable)
    frame["labels_of_content"] = frame["sha256"].map(names).where(usable)
    return frame


def _reason(row: dict, failures: list[Failure]) -> str:
    """Why a row is not 'ok': its ignore note, or every failed expectation with its explanation."""
    if row["status"] != "quarantined":
        return row["ignored"] if row["status"] == "ignored" else ""
    parts = []
    for failure in failures:
        if row["path"] in failure.keys:
            message = failure.message.format_map({k: ("?" if pd.isna(v) else v) for k, v in row.items()})
            parts.append(message if failure.code == "unusable" else f"{failure.code}: {message}")
    return "; ".join(parts)


def validate(data_dir: Path, params: ValidateParams, out_dir: Path, *, workers: int | None = None) -> ValidationReport:
    """Run the validate stage.

    Args:
        data_dir: the class-per-folder image root (``data/``).
        params: the ``validate`` section of params.yaml.
        out_dir: where the manifest, quarantine list, summary, resolved params and Data Docs go.
        workers: processes reading images; all cores when None.

    Returns:
        The report; its manifest holds one row per file with ``status`` ok, quarantined or ignored.

    Raises:
        FileNotFoundError: ``data_dir`` does not exist.
        ValidationFailed: a dataset-level check failed; the outputs are still written for inspection.
        DamagedCacheError: files of data/ came out of damaged DVC cache objects (:mod:`visionops.data.dvccache`).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir}/ not found: run `dvc pull` to fetch the dataset, or `visionops sample-data` to make "
            "the sample."
        )
    facts = scan(data_dir, params.max_pixels, workers)
    check_checkouts(data_dir, {f.path: f.md5 for f in facts if f.md5})  # before any output: nothing from damaged bytes
    table = _file_table(facts)
    found = sorted({f.label for f in facts if f.label and not f.ignored})
    classes = list(params.classes) if params.classes is not None else found

    candidates = table[table["ignored"].isna()]
    docs = out_dir / "data_docs"
    shutil.rmtree(docs, ignore_errors=True)  # a generated folder: stale pages of earlier runs would mislead
    file_result = run_suites({"files": (candidates, "path", files_suite(params, classes))}, docs)["files"]
    failing = {key for failure in file_result["failures"] for key in failure.keys}

    table["status"] = "ok"
    table.loc[table["path"].isin(failing), "status"] = "quarantined"
    table.loc[table["ignored"].notna(), "status"] = "ignored"
    table["reason"] = [_reason(row, file_result["failures"]) for row in table.to_dict("records")]

    counts = table[table["status"] == "ok"].groupby("label").size()
    per_class = pd.DataFrame({"label": classes, "images": [int(counts.get(c, 0)) for c in classes]})
    biggest = per_class["images"].max() if len(per_class) else 0
    per_class["imbalance"] = (biggest / per_class["images"].where(per_class["images"] > 0)).astype(float)
    class_result = run_suites({"classes": (per_class, "label", classes_suite(params, classes))}, docs)["classes"]
    problems = [
        failure.message.format_map(row)
        for failure in class_result["failures"]
        for row in (per_class[per_class["label"].isin(failure.keys)].to_dict("records") or [{}])
    ]

    manifest = table[MANIFEST_COLUMNS].sort_values("path", ignore_index=True)
    # Unusable files carry their own code from the probe ("empty_file: ..."); the others the expectation's.
    codes = Counter(error.split(":", 1)[0] for error in candidates["error"].dropna())
    codes.update({failure.code: len(failure.keys) for failure in file_result["failures"] if failure.code != "unusable"})
    summary = _summary(manifest, per_class, codes, problems, empty_class_folders(data_dir))
    _write_outputs(out_dir, manifest, summary, params)
    if problems:
        raise ValidationFailed(
            "validate: the dataset cannot be used:\n  - "
            + "\n  - ".join(problems)
            + f"\nDetails: {docs / 'index.html'} and {out_dir / MANIFEST_FILE}"
        )
    return ValidationReport(manifest=manifest, classes=classes, summary=summary)


def _summary(
    manifest: pd.DataFrame, per_class: pd.DataFrame, codes: Counter, problems: list[str], empty: list[str]
) -> dict:
    status = manifest["status"]
    ok = manifest[status == "ok"]
    warnings = [f"class folder '{name}' holds no image: ignored" for name in empty]
    dup = int(ok.duplicated("sha256").sum())
    if dup:
        warnings.append(f"{dup} exact duplicate file(s) within a class: kept, and always split to the same side")
    renamed = int(manifest["note"].notna().sum())
    if renamed:
        warnings.append(f"{renamed} file(s) whose extension does not match their content: kept (see the note column)")
    return {
        "files": len(manifest),
        "usable": len(ok),
        "quarantined": int((status == "quarantined").sum()),
        "ignored": int((status == "ignored").sum()),
        "classes": {row["label"]: int(row["images"]) for row in per_class.to_dict("records")},
        "quarantine_reasons": dict(sorted(codes.items())),
        "dataset_problems": problems,
        "warnings": warnings,
        "data_docs": "data_docs/index.html",
    }


def _write_outputs(out_dir: Path, manifest: pd.DataFrame, summary: dict, params: ValidateParams) -> None:
    write_manifest(out_dir, manifest)
    quarantine = manifest[manifest["status"] == "quarantined"][["path", "label", "reason"]]
    atomic_write_text(out_dir / "quarantine.csv", quarantine.to_csv(index=False, lineterminator="\n"))
    write_json(out_dir / "summary.json", summary)
    write_resolved(out_dir, params)
