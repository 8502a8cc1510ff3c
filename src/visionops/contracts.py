"""What stages hand each other, and what a trained model answers: checked wherever the two meet.

A model's *interface* is what a client of it relies on: the task, the class names in output order, the input
size and the preprocessing (the centre square's side before the centre crop). Two models with different
interfaces answer different questions, so their scores are never compared (promote), and a model is never
applied to data labelled with classes it does not know (evaluate, a hold-out folder), nor loaded with a class
list that does not match its outputs (predict, serving, export).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from visionops.errors import UserError

INTERFACE_KEYS = ("task", "classes", "image_size", "resize_side")
DEFAULT_TOP_K = 3  # class names a served model answers per image unless the request says top_k


class ClassMismatchError(UserError, ValueError):
    """A model meets data or a class list it was not trained for. The message names both sides and the fix."""


def interface(info: dict) -> dict:
    """The part of a model's classes.json (or registry metadata) that clients rely on."""
    return {key: info.get(key) for key in INTERFACE_KEYS}


def _names(classes: list) -> str:
    return "[" + ", ".join(map(str, classes)) + "]"


def mismatch(candidate: dict, other: dict, other_name: str) -> str | None:
    """Why model ``candidate`` cannot be compared with (or stand in for) ``other``; None when they are alike.

    Args:
        candidate: the new model's classes.json or metadata (``interface`` keys).
        other: the other model's; ``other_name`` names it in the message (``champion v3``).

    Returns:
        One line listing every difference, each naming both sides; None when the interfaces are equal.
    """
    a, b = interface(candidate), interface(other)
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


def check_labels(labels: list[str], info: dict, model: str, data: str) -> None:
    """Refuse to score ``model`` on ``data`` when the data's labels include classes the model does not know.

    The orientation task makes its labels from rotations, so any data fits it. Data holding only some of the
    model's classes is fine (a partial test set).

    Raises:
        ClassMismatchError: names the unknown labels, both class sets and what to do.
    """
    if info["task"] == "orientation":
        return
    unknown = sorted(set(labels) - set(info["classes"]))
    if unknown:
        raise ClassMismatchError(
            f"{model} was trained on classes {_names(info['classes'])}, but {data} is labelled "
            f"{_names(sorted(set(labels)))}: {_names(unknown)} are unknown to it. Score it on data with its classes, "
            "or train a model on this data (`dvc repro train`) and score that one."
        )


def check_outputs(outputs: int, image_size: int | None, info: dict, source: str) -> None:
    """Refuse a model whose output count or input size disagrees with the class list and size stored beside it.

    Raises:
        ClassMismatchError: the model file and its class list come from different trainings.
    """
    classes = info["classes"]
    if outputs != len(classes) or (image_size is not None and image_size != info["image_size"]):
        raise ClassMismatchError(
            f"{source}: the model outputs {outputs} classes at {image_size} px, but the class list stored with it "
            f"names {len(classes)} {_names(classes)} at {info['image_size']} px: the model file and classes.json come "
            "from different trainings. Keep the model.keras and classes.json of one train run together."
        )


def read_split(split_dir: Path) -> tuple[dict[str, pd.DataFrame], dict]:
    """The train/val/test lists and split.json of the split stage.

    Raises:
        FileNotFoundError: the split stage has not run.
    """
    split_dir = Path(split_dir)
    if not (split_dir / "split.json").is_file():
        raise FileNotFoundError(f"{split_dir}/split.json not found: run the split stage first (`dvc repro split`).")
    lists = {s: pd.read_csv(split_dir / f"{s}.csv", dtype=str, keep_default_na=False) for s in ("train", "val", "test")}
    return lists, json.loads((split_dir / "split.json").read_text())
