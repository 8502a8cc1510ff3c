"""params.yaml → typed, validated settings.

Every section is a pydantic model that forbids unknown keys, so a typo such as ``split.test_ratoi`` stops
the run with a message naming the key, instead of silently running with the default.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from visionops.files import write_json

ImageFormat = Literal["JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF"]


class ConfigError(ValueError):
    """params.yaml (or an override) is missing, malformed, or holds a bad value. The message says how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidateParams(_Section):
    """Thresholds of the validate stage (``validate:`` in params.yaml)."""

    classes: list[str] | None = Field(
        default=None, description="Expected class folders; null takes every non-empty top-level folder of data/."
    )
    allowed_formats: list[ImageFormat] = Field(default=["JPEG", "PNG", "BMP", "WEBP"], min_length=1)
    min_side: int = Field(default=32, ge=1, description="Smallest allowed width or height, in pixels.")
    max_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest width*height; checked from the header, before decoding."
    )
    channels: list[Literal[1, 2, 3, 4]] = Field(default=[1, 2, 3, 4], min_length=1)
    min_images_per_class: int = Field(default=10, ge=1)
    max_imbalance_ratio: float = Field(default=10.0, ge=1.0, description="Largest class size / smallest class size.")

    @field_validator("classes")
    @classmethod
    def _classes_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("list at least two classes, or null to take them from the folders")
            if len(set(value)) != len(value):
                raise ValueError(f"classes must be unique, got {value}")
        return value


class SplitParams(_Section):
    """Ratios and seed of the split stage (``split:`` in params.yaml)."""

    test_ratio: float = Field(default=0.2, gt=0.0, lt=1.0, description="Share of each class held out for test.")
    val_ratio: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Share of the remaining training images used for validation."
    )
    seed: int = Field(default=42, ge=0)

    @model_validator(mode="after")
    def _train_left(self) -> SplitParams:
        if (1 - self.test_ratio) * (1 - self.val_ratio) < 0.05:
            raise ValueError("test_ratio and val_ratio leave less than 5% of the images for training")
        return self


class Params(_Section):
    """The whole params.yaml: one section per stage."""

    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Keys allowed at the parent of ``loc`` (used to suggest a fix for an unknown key)."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return [f.alias or n for n, f in model.model_fields.items()]


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(item["loc"])
            close = difflib.get_close_matches(str(item["loc"][-1]), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"  - {key}: unknown key.{hint} Allowed here: {', '.join(allowed)}.")
        else:
            lines.append(f"  - {key}: {item['msg']} (got {item.get('input')!r}).")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping.

    Raises:
        ConfigError: a key is unknown, a value has the wrong type or is out of range; every problem is listed.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (validate:, split:, ...), got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or fails validation.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found. Run from the project root, or pass --params PATH.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, source=str(path))


def save_resolved(section: BaseModel, out_dir: Path) -> Path:
    """Write the resolved settings a stage ran with to ``out_dir/params.json`` and return that path."""
    target = Path(out_dir) / "params.json"
    write_json(target, section.model_dump(mode="json", by_alias=True))
    return target
