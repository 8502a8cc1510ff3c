"""What the contracts share: reading their JSON with a message that names the stage to run, CSV and JSON text."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel


def known_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are fields of dataclass ``cls`` (files from newer versions may hold more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def read_json(path: Path, produced_by: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the {produced_by} stage first (`dvc repro {produced_by}`).")
    return json.loads(path.read_text())


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value
