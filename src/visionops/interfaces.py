"""Where a trained model meets data or another model: its interface checked, its file checked before it is loaded.

A model's *interface* (:meth:`visionops.contracts.model.ModelInfo.interface`: the task, the class names in output order,
the input size and the preprocessing) is what a client of it relies on. Two models with different interfaces answer
different questions, so their scores are never compared (promote), and a model is never applied to data labelled with
classes it does not know (evaluate, a hold-out folder), nor loaded with a class list that does not match its outputs
(predict, serving, export).
"""

from __future__ import annotations

from pathlib import Path

from visionops.contracts.model import ModelInfo
from visionops.errors import UserError


class ClassMismatchError(UserError, ValueError):
    """A model meets data or a class list it was not trained for. The message names both sides and the fix."""


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


def check_labels(labels: list[str], info: ModelInfo, model: str, *, data: str) -> None:
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


def check_outputs(outputs: int, image_size: int | None, info: ModelInfo, *, source: str) -> None:
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
