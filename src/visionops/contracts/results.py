"""What scoring and promotion leave: the test metrics, the per-class table, the resolved params, the decision."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel

from visionops.contracts.base import csv_text, dump, known_fields, read_json
from visionops.errors import UserError
from visionops.files import atomic_write_text, write_json

RESOLVED_FILE = "params.json"
PER_CLASS_FILE = "per_class.csv"
PREDICTIONS_FILE = "predictions.csv"


@dataclass(frozen=True)
class Promotion:
    """``promote/decision.json``: what promote did with the run's model version, and why (also as version tags)."""

    registered_model: str
    version: str
    run_id: str
    model_uri: str
    metric: str
    score: float
    decision: Literal["promoted", "kept", "rejected", "incomparable", "indistinguishable"]
    reason: str
    decided_at: str
    champion_before: str | None = None
    champion_score: float | None = None
    champion_rescored: bool = False
    already_decided: bool = False
    replace_reason: str | None = None
    params: dict = field(default_factory=dict)
    evidence: dict | None = None  # the gain's interval and per-class recalls against the champion (training.evidence)

    FILE = "decision.json"

    @classmethod
    def read(cls, folder: Path) -> Promotion:
        """Read ``folder/decision.json``.

        Raises:
            FileNotFoundError: promote has not run.
        """
        return cls(**known_fields(cls, read_json(Path(folder) / cls.FILE, "promote")))

    def write(self, folder: Path) -> None:
        """Write decision.json into ``folder``."""
        write_json(Path(folder) / self.FILE, asdict(self))


def write_resolved(folder: Path, section: BaseModel | dict[str, Any]) -> Path:
    """Write the resolved settings a stage ran with (one params section, or a mapping of several) into ``folder``."""
    target = Path(folder) / RESOLVED_FILE
    write_json(target, dump(section))
    return target


def read_resolved(folder: Path) -> dict[str, Any]:
    """The resolved settings the stage whose folder is ``folder`` ran with."""
    return read_json(Path(folder) / RESOLVED_FILE, Path(folder).name)


def write_per_class(folder: Path, table: pd.DataFrame) -> None:
    """Write a scored set's per-class precision, recall, F1 and support into ``folder``."""
    atomic_write_text(Path(folder) / PER_CLASS_FILE, csv_text(table.round(6)))


def read_per_class(folder: Path) -> list[dict[str, Any]]:
    """The per-class rows of the scored set in ``folder`` (empty when it has none)."""
    path = Path(folder) / PER_CLASS_FILE
    return (
        [{str(k): v for k, v in row.items()} for row in pd.read_csv(path).to_dict("records")] if path.is_file() else []
    )


def write_predictions(folder: Path, table: pd.DataFrame) -> None:
    """Write a scored set's predictions into ``folder``: one row per image (and rotation, for the orientation task)
    with ``path``, ``label``, ``predicted``, ``confidence`` and a ``p_<class>`` probability per class, in the model's
    output order."""
    atomic_write_text(Path(folder) / PREDICTIONS_FILE, table.to_csv(index=False, lineterminator="\n"))


def read_predictions(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """A predictions file (:func:`write_predictions`) and its classes in output order.

    Raises:
        UserError: the file is missing or lacks the columns above.
    """
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: predictions cannot be read ({err}); rerun the stage that wrote them") from None
    classes = [c[2:] for c in table.columns if c.startswith("p_")]
    missing = [c for c in ("path", "label") if c not in table.columns] + ([] if classes else ["p_<class>"])
    if missing:
        raise UserError(f"{path}: predictions without the column(s) {missing}; rerun the stage that wrote them")
    return table, classes


@dataclass(frozen=True)
class TestMetrics:
    """``metrics.json``: a model's scores on the test split (a DVC metric; promote's evidence), and ``scored.json``:
    which split they are of.

    metrics.json keeps one number per metric (``top_2_accuracy`` for the top-k accuracy with k = 2) and nothing else,
    which is what ``dvc metrics show`` and ``dvc metrics diff`` list: the split's 64-character id, a string, would
    double the table's width, so it has its own file.
    """

    accuracy: float
    macro_f1: float
    top_k_accuracy: dict[int, float]
    roc_auc_ovr: float | None
    ece: float
    examples: int
    split_id: str
    holdout: dict[str, Any] | None = None

    FILE = "metrics.json"
    SCOPE_FILE = "scored.json"
    REQUIRED = ("accuracy", "macro_f1", "roc_auc_ovr", "ece", "examples", "split_id")
    __test__ = False  # (a name pytest would otherwise collect)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TestMetrics:
        """From metrics.json's layout (or scoring's dict of the same keys)."""
        top = {int(k.split("_")[1]): float(v) for k, v in values.items() if k.startswith("top_") and v is not None}
        known = {k: values[k] for k in cls.REQUIRED if k in values}
        if missing := [k for k in cls.REQUIRED if k not in known]:
            raise ValueError(f"{cls.FILE} lacks {', '.join(missing)}: rerun evaluate (`dvc repro -f evaluate`)")
        return cls(**known, top_k_accuracy=top, holdout=values.get("holdout"))

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's layout."""
        values: dict[str, Any] = {"accuracy": self.accuracy, "macro_f1": self.macro_f1}
        values.update({f"top_{k}_accuracy": v for k, v in sorted(self.top_k_accuracy.items())})
        values.update(roc_auc_ovr=self.roc_auc_ovr, ece=self.ece, examples=self.examples)
        if self.holdout is not None:
            values["holdout"] = self.holdout
        return values

    def numbers(self) -> dict[str, float]:
        """Every metric with a value, by its metrics.json name (``examples`` included)."""
        return {k: v for k, v in self.to_dict().items() if isinstance(v, int | float) and not isinstance(v, bool)}

    def value(self, metric: str) -> float | None:
        """The value of ``metric`` as promote names it (``macro_f1``, ``top_2_accuracy``…), None when absent."""
        found = self.numbers().get(metric)
        return None if found is None or metric == "examples" else float(found)

    @classmethod
    def read(cls, folder: Path) -> TestMetrics:
        """Read ``folder/metrics.json`` and ``folder/scored.json``.

        Raises:
            FileNotFoundError: evaluate has not run.
            UserError: the file lacks a metric (written by hand, or by another program), naming the file.
        """
        path = Path(folder) / cls.FILE
        try:
            scope = read_json(Path(folder) / cls.SCOPE_FILE, "evaluate")
            return cls.from_dict({**read_json(path, "evaluate"), "split_id": scope["split_id"]})
        except (ValueError, KeyError) as error:
            raise UserError(f"{path}: {error}") from None

    @classmethod
    def present(cls, folder: Path) -> bool:
        """Whether ``folder`` holds a metrics.json (evaluate ran)."""
        return (Path(folder) / cls.FILE).is_file()

    def write(self, folder: Path) -> None:
        """Write metrics.json and scored.json into ``folder``."""
        write_json(Path(folder) / self.SCOPE_FILE, {"split_id": self.split_id})
        write_json(Path(folder) / self.FILE, self.to_dict())
