"""The files stages hand each other, as types, and what a trained model answers: checked wherever the two meet.

Typed contracts: :class:`ModelInfo` (``train/classes.json``: what a trained model takes and answers), :class:`SplitInfo`
(``split/split.json``), :class:`RunInfo` (``train/run.json``: the MLflow run), each read and written here only, so a
key is spelled once. Every stage and the served model read them through these types.

A model's *interface* is what a client of it relies on: the task, the class names in output order, the input
size and the preprocessing (the centre square's side before the centre crop). Two models with different
interfaces answer different questions, so their scores are never compared (promote), and a model is never
applied to data labelled with classes it does not know (evaluate, a hold-out folder), nor loaded with a class
list that does not match its outputs (predict, serving, export).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from visionops.errors import UserError
from visionops.files import write_json

INTERFACE_KEYS = ("task", "classes", "image_size", "resize_side")
DEFAULT_TOP_K = 3  # class names a served model answers per image unless the request says top_k
ROTATIONS = (0, 90, 180, 270)  # orientation task classes, degrees counter-clockwise
SPLITS = ("train", "val", "test")
Task = Literal["classification", "orientation"]


def is_model_uri(value: Path | str) -> bool:
    """Whether ``value`` names an MLflow model (``models:/NAME@champion``, ``models:/NAME/3``, ``runs:/ID/model``)
    rather than a model.keras file or the train stage's folder."""
    return str(value).startswith(("models:/", "runs:/"))


class ClassMismatchError(UserError, ValueError):
    """A model meets data or a class list it was not trained for. The message names both sides and the fix."""


def _known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are fields of dataclass ``cls`` (files from newer versions may hold more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _read_json(path: Path, produced_by: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the {produced_by} stage first (`dvc repro {produced_by}`).")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class ModelInfo:
    """``classes.json``: what a trained model takes and answers, and where it was trained.

    Written by train beside model.keras, logged as the registered model's metadata, read by evaluate, predict,
    export, serving and promote.
    """

    classes: list[str]
    task: Task
    image_size: int
    resize_side: int
    model: str = ""
    batchnorm_frozen: bool | None = None
    gpu: bool = False
    mixed_precision: bool = False
    xla: bool = False
    strategy: str = "default"
    replicas: int = 1
    workers: int = 1

    FILE = "classes.json"
    METADATA_KEYS = ("classes", "task", "image_size", "resize_side", "model")

    @classmethod
    def for_task(cls, task: Task, data_classes: Sequence[str], **rest: Any) -> ModelInfo:
        """The output classes of ``task``: the data's labels (sorted), or the four rotations for orientation."""
        classes = [str(r) for r in ROTATIONS] if task == "orientation" else list(data_classes)
        return cls(classes=classes, task=task, **rest)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelInfo:
        """From classes.json's content or a registered model's metadata (unknown keys are ignored)."""
        return cls(**_known(cls, values))

    @classmethod
    def read(cls, path: Path) -> ModelInfo:
        """Read ``path`` (classes.json, or the folder holding it).

        Raises:
            FileNotFoundError: no classes.json there.
        """
        path = Path(path)
        path = path / cls.FILE if path.is_dir() or path.suffix != ".json" else path
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the model's class names and input size are stored there")
        return cls.from_dict(json.loads(path.read_text()))

    def write(self, folder: Path) -> None:
        """Write classes.json into ``folder`` (atomically, stable bytes)."""
        write_json(Path(folder) / self.FILE, asdict(self))

    def metadata(self) -> dict[str, Any]:
        """What the logged model carries as MLflow metadata."""
        return {key: getattr(self, key) for key in self.METADATA_KEYS}

    def interface(self) -> dict[str, Any]:
        """The part clients rely on (:data:`INTERFACE_KEYS`)."""
        return {key: getattr(self, key) for key in INTERFACE_KEYS}

    def labels(self, names: Sequence[str]) -> list[int]:
        """Class indices of data labelled ``names``; the orientation task labels by rotation instead (all 0 here)."""
        if self.task == "orientation":
            return [0] * len(names)
        return [self.classes.index(name) for name in names]


@dataclass(frozen=True)
class SplitInfo:
    """``split.json``: the split's classes, counts per side and class, a hash of each list and the split's id."""

    classes: list[str]
    counts: dict[str, dict[str, int]]
    totals: dict[str, int]
    sha256: dict[str, str]
    split_id: str
    warnings: list[str] = field(default_factory=list)

    FILE = "split.json"

    @classmethod
    def read(cls, split_dir: Path) -> SplitInfo:
        """Read ``split_dir/split.json``.

        Raises:
            FileNotFoundError: the split stage has not run.
        """
        return cls(**_known(cls, _read_json(Path(split_dir) / cls.FILE, "split")))

    def write(self, split_dir: Path) -> None:
        """Write split.json into ``split_dir``."""
        write_json(Path(split_dir) / self.FILE, asdict(self))


def read_split(split_dir: Path) -> tuple[dict[str, pd.DataFrame], SplitInfo]:
    """The train/val/test lists (path, label, sha256) and split.json of the split stage.

    Raises:
        FileNotFoundError: the split stage has not run.
    """
    info = SplitInfo.read(split_dir)
    lists = {s: pd.read_csv(Path(split_dir) / f"{s}.csv", dtype=str, keep_default_na=False) for s in SPLITS}
    return lists, info


@dataclass(frozen=True)
class RunInfo:
    """``run.json``: the MLflow run of a training, which evaluate and promote write into."""

    run_id: str
    run_name: str
    experiment_id: str
    tracking_uri: str

    FILE = "run.json"

    @classmethod
    def read(cls, path: Path) -> RunInfo:
        """Read run.json (the file, or the train stage's folder holding it).

        Raises:
            FileNotFoundError: train has not run (with tracking).
        """
        path = Path(path)
        return cls(**_known(cls, _read_json(path / cls.FILE if path.is_dir() else path, "train")))

    def write(self, folder: Path) -> None:
        """Write run.json into ``folder``."""
        write_json(Path(folder) / self.FILE, asdict(self))


@dataclass(frozen=True)
class Promotion:
    """``promote/decision.json``: what promote did with the run's model version, and why (also as version tags)."""

    registered_model: str
    version: str
    run_id: str
    model_uri: str
    metric: str
    score: float
    decision: Literal["promoted", "kept", "rejected", "incomparable"]
    reason: str
    decided_at: str
    champion_before: str | None = None
    champion_score: float | None = None
    champion_rescored: bool = False
    already_decided: bool = False
    replace_reason: str | None = None
    params: dict = field(default_factory=dict)

    FILE = "decision.json"

    @classmethod
    def read(cls, folder: Path) -> Promotion:
        """Read ``folder/decision.json``.

        Raises:
            FileNotFoundError: promote has not run.
        """
        return cls(**_known(cls, _read_json(Path(folder) / cls.FILE, "promote")))

    def write(self, folder: Path) -> None:
        """Write decision.json into ``folder``."""
        write_json(Path(folder) / self.FILE, asdict(self))


def _names(classes: list) -> str:
    return "[" + ", ".join(map(str, classes)) + "]"


def mismatch(candidate: ModelInfo, other: ModelInfo, other_name: str) -> str | None:
    """Why model ``candidate`` cannot be compared with (or stand in for) ``other``; None when they are alike.

    Args:
        candidate: the new model's interface.
        other: the other model's; ``other_name`` names it in the message (``champion v3``).

    Returns:
        One line listing every difference, each naming both sides; None when the interfaces are equal.
    """
    a, b = candidate.interface(), other.interface()
    found = []
    if a["task"] != b["task"]:
        found.append(f"task differs: this model answers '{a['task']}', {other_name} answers '{b['task']}'")
    if a["classes"] != b["classes"]:
        ours, theirs = list(a["classes"] or []), list(b["classes"] or [])
        if sorted(map(str, ours)) == sorted(map(str, theirs)):
            found.append(
                f"class order differs: this model has {_names(ours)}, {other_name} has {_names(theirs)} "
                "(the same output index means another class)"
            )
        else:
            found.append(
                f"classes differ: this model has {_names(ours)} ({len(ours)}), {other_name} has "
                f"{_names(theirs)} ({len(theirs)})"
            )
    if a["image_size"] != b["image_size"]:
        found.append(f"input size differs: this model takes {a['image_size']} px, {other_name} {b['image_size']} px")
    elif a["resize_side"] != b["resize_side"]:
        found.append(
            f"preprocessing differs: this model crops {a['image_size']} px from a {a['resize_side']}-px "
            f"square, {other_name} from a {b['resize_side']}-px square"
        )
    return "; ".join(found) or None


def check_labels(labels: list[str], info: ModelInfo, model: str, data: str) -> None:
    """Refuse to score ``model`` on ``data`` when the data's labels include classes the model does not know.

    The orientation task makes its labels from rotations, so any data fits it. Data holding only some of the
    model's classes is fine (a partial test set).

    Raises:
        ClassMismatchError: names the unknown labels, both class sets and what to do.
    """
    if info.task == "orientation":
        return
    unknown = sorted(set(labels) - set(info.classes))
    if unknown:
        raise ClassMismatchError(
            f"{model} was trained on classes {_names(info.classes)}, but {data} is labelled "
            f"{_names(sorted(set(labels)))}: {_names(unknown)} are unknown to it. Score it on data with its classes, "
            "or train a model on this data (`dvc repro train`) and score that one."
        )


def check_outputs(outputs: int, image_size: int | None, info: ModelInfo, source: str) -> None:
    """Refuse a model whose output count or input size disagrees with the class list and size stored beside it.

    Raises:
        ClassMismatchError: the model file and its class list come from different trainings.
    """
    classes = info.classes
    if outputs != len(classes) or (image_size is not None and image_size != info.image_size):
        raise ClassMismatchError(
            f"{source}: the model outputs {outputs} classes at {image_size} px, but the class list stored with it "
            f"names {len(classes)} {_names(classes)} at {info.image_size} px: the model file and classes.json come "
            "from different trainings. Keep the model.keras and classes.json of one train run together."
        )


class DamagedModelError(UserError, ValueError):
    """A model file is not the one train wrote (truncated, bytes changed); the message says how to get it back."""


def check_model_file(path: Path) -> None:
    """Insist that a ``.keras`` file is whole before anything loads or logs it.

    A ``.keras`` file is a zip archive whose members carry CRC-32 checksums: reading every member (``testzip``)
    finds a truncated file (no central directory) and any changed byte of the config or weights, at the cost of one
    read of the file (milliseconds next to loading it). Keras itself reports a truncated file as "File not found",
    and a changed byte as a zip error deep in its loader.

    Raises:
        DamagedModelError: the file is not a complete, unchanged archive; the message names it and the fixes.
    """
    import struct
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            problem = f"member {bad} fails its CRC-32 check" if bad else None
            if problem is None and "config.json" not in archive.namelist():
                problem = "no config.json in the archive"
    # (what a damaged archive raises; an unreadable file's OSError passes through, naming the path)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        ValueError,
        zlib.error,
        struct.error,
        NotImplementedError,
    ) as exc:
        problem = str(exc) or type(exc).__name__
    if problem:
        raise DamagedModelError(
            f"{path} is damaged ({problem}): it is truncated or its bytes changed after it was written, so it was not "
            "used. Restore it: `dvc checkout` it when DVC tracks it (the train stage's model.keras: `dvc checkout "
            "artifacts/train/model.keras`), or train again: `dvc repro -f train` (or `visionops train`)."
        )
