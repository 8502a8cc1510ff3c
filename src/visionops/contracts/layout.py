"""Where the stages keep their files: one folder per dvc.yaml stage under the artifacts root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifacts:
    """The stages' output folders under ``root`` (``artifacts/``), as dvc.yaml names them."""

    root: Path

    @property
    def validate(self) -> Path:
        """validate's folder: the manifest, quarantine list, summary and Data Docs."""
        return Path(self.root) / "validate"

    @property
    def split(self) -> Path:
        """split's folder: the three lists and split.json."""
        return Path(self.root) / "split"

    @property
    def train(self) -> Path:
        """train's folder: the model, its class list, weights record, history and run.json."""
        return Path(self.root) / "train"

    @property
    def evaluate(self) -> Path:
        """evaluate's folder: the test metrics, per-class table, predictions and error gallery."""
        return Path(self.root) / "evaluate"

    @property
    def promote(self) -> Path:
        """promote's folder: the decision and the model card."""
        return Path(self.root) / "promote"
