"""params.yaml → typed, validated settings.

Every section is a pydantic model that forbids unknown keys, so a typo such as ``split.test_ratoi`` stops
the run with a message naming the key, instead of silently running with the default.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from visionops.errors import UserError
from visionops.files import climbs_out, write_json

ImageFormat = Literal["JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF"]


class ConfigError(UserError, ValueError):
    """params.yaml (or an override) is missing, malformed, or holds a bad value. The message says how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_climbing(value: str | None, what: str) -> str | None:
    """Refuse a relative path that climbs out of the project with ``..``; absolute paths are the explicit way out."""
    if value is not None and climbs_out(value):
        raise ValueError(
            f"'{value}' climbs out of the project with '..'. Put the {what} inside the project, or give its "
            "absolute path if it really lives elsewhere"
        )
    return value


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
            for name in value:
                # A class is one folder directly under data/: a path here would read (or report) outside it.
                if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\"):
                    raise ValueError(f"'{name}' is not a folder name of data/: use plain names such as 'cat'")
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


VARIANT_SIZES = {
    "EfficientNetB0": 224,
    "EfficientNetB1": 240,
    "EfficientNetB2": 260,
    "EfficientNetB3": 300,
    "EfficientNetB4": 380,
    "EfficientNetB5": 456,
    "EfficientNetB6": 528,
    "EfficientNetB7": 600,
    "EfficientNetV2B0": 224,
    "EfficientNetV2B1": 240,
    "EfficientNetV2B2": 260,
    "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384,
    "EfficientNetV2M": 480,
    "EfficientNetV2L": 480,
    "EfficientNetLite0": 224,
    "EfficientNetLite1": 240,
    "EfficientNetLite2": 260,
}
if TYPE_CHECKING:  # (a Literal built from the table, one list to maintain, is beyond a static checker)
    Variant = str
else:
    Variant = Literal[tuple(VARIANT_SIZES)]
# Keras builds EfficientNet at any side >= 32, but every variant's published size is a multiple of 4 (224, 240,
# 260, 300, 380, 456, 528, 600, 384, 480): the stem and first stride-2 stage then divide evenly, with no
# one-sided 'same' padding at the highest resolution. Other values are almost always typos (225, 299).
SIZE_STEP = 4


class StageParams(_Section):
    """One fine-tuning stage: how long, how fast, and how the rate changes over the stage."""

    epochs: int = Field(default=3, ge=0)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="cosine: decay per step from learning_rate to 0 at the stage's last step."
    )
    warmup_epochs: float = Field(
        default=0.0, ge=0, description="Linear warm-up from 0 to learning_rate first (at most half the stage)."
    )


class HeadParams(StageParams):
    """Stage 1: the head on the frozen backbone's pooled features, embedded once per view (visionops.embeddings)."""

    views: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Views of each training image embedded once: its centre crop and views - 1 augmented ones; "
        "every epoch shows each image in one of them.",
    )


class FinetuneParams(StageParams):
    """Stage 2: the top of the backbone is unfrozen (BatchNormalization layers stay frozen)."""

    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    unfreeze_blocks: int | Literal["all"] = Field(
        default=2, description="How many of the backbone's top blocks to unfreeze, or 'all'."
    )
    batchnorm: Literal["auto", "frozen", "trainable"] = Field(
        default="auto",
        description="auto: frozen when the backbone starts from pretrained weights (their statistics are worth "
        "keeping), trainable when it starts from random weights (frozen initial statistics cannot learn).",
    )

    @field_validator("unfreeze_blocks")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("use a number of blocks >= 1, or 'all'")
        return value


class TrainParams(_Section):
    """The train stage (``train:`` in params.yaml)."""

    task: Literal["classification", "orientation"] = "classification"
    model: Variant = "EfficientNetB0"
    image_size: int | None = Field(
        default=None, ge=32, le=1024, description=f"null: the variant's default size; else a multiple of {SIZE_STEP}."
    )
    weights: str | None = Field(default="imagenet", description="'imagenet', a local weights file, or null.")
    weights_fallback: Literal["stop", "random"] = Field(
        default="stop", description="When ImageNet weights cannot be fetched: stop, or train from random init."
    )
    batch_size: int = Field(default=32, ge=1, le=4096)
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        default="adam", description="sgd: momentum 0.9, Nesterov. adamw/sgd apply weight_decay."
    )
    weight_decay: float = Field(
        default=0.0, ge=0, lt=1, description="Decoupled weight decay (adamw, sgd); never on biases and norms."
    )
    crop_scale: tuple[float, float] | None = Field(
        default=None,
        description="Random-resized-crop area range, as shares of the cached square (e.g. [0.35, 1.0]); "
        "null: fixed-size random crops of the cached square.",
    )
    dropout: float = Field(default=0.2, ge=0, lt=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    class_weights: bool = Field(default=True, description="Weight classes inversely to their frequency.")
    early_stopping_patience: int = Field(default=3, ge=1)
    early_stopping_min_delta: float = Field(
        default=0.0, ge=0, description="A smaller fall of the validation loss does not count as better."
    )
    resize_margin: float = Field(default=1.15, ge=1.0, le=2.0, description="Cache images this much larger.")
    cache: Literal["auto", "memory", "disk"] = Field(
        default="auto", description="auto: memory while train + val images fit half the available memory, else disk."
    )
    workers: int = Field(default=2, ge=1, le=64, description="Threads running the augmentations.")
    seed: int = Field(default=42, ge=0)
    head: HeadParams = Field(default_factory=HeadParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)

    @property
    def size(self) -> int:
        """The training image side: ``image_size`` or the variant's default."""
        return self.image_size or VARIANT_SIZES[self.model]

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] <= value[1] <= 1:
            raise ValueError(f"{list(value)}: use [low, high] with 0 < low <= high <= 1, e.g. [0.35, 1.0]")
        return value

    @model_validator(mode="after")
    def _decay_needs_its_optimizer(self) -> TrainParams:
        if self.weight_decay and self.optimizer == "adam":
            raise ValueError("weight_decay is set but optimizer is adam (no decoupled decay): use optimizer: adamw")
        return self

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("use 'imagenet', a path to a weights file, or null")
        return _no_climbing(value, "weights file")

    @field_validator("image_size")
    @classmethod
    def _size_step(cls, value: int | None) -> int | None:
        if value is not None and value % SIZE_STEP:
            low = value - value % SIZE_STEP
            options = " or ".join(str(v) for v in (low, low + SIZE_STEP) if 32 <= v <= 1024)
            raise ValueError(f"{value} is not a multiple of {SIZE_STEP} (EfficientNet input sides): use {options}")
        return value


class AugmentStep(BaseModel):
    """One albumentations transform: ``{name: HorizontalFlip, p: 0.5}``; the other keys are its arguments.

    The name and arguments are checked against albumentations when the pipeline is built (augment.py).
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)

    @property
    def args(self) -> dict[str, Any]:
        """The transform's keyword arguments (every key but ``name``)."""
        return dict(self.model_extra or {})


class EvaluateParams(_Section):
    """The evaluate stage (``evaluate:`` in params.yaml)."""

    top_k: int = Field(default=2, ge=1)
    calibration_bins: int = Field(default=10, ge=2, le=100)
    batch_size: int = Field(default=64, ge=1)
    holdout_dir: str | None = Field(default=None, description="An extra class-per-folder set scored the same way.")
    gallery_per_class: int = Field(
        default=12, ge=1, le=200, description="Misclassified images shown per true class in errors/gallery.*."
    )

    @field_validator("holdout_dir")
    @classmethod
    def _holdout_inside(cls, value: str | None) -> str | None:
        return _no_climbing(value, "hold-out folder")


class TrackingParams(_Section):
    """Where train and evaluate log in MLflow (``tracking:`` in params.yaml); the server comes from
    MLFLOW_TRACKING_URI, or the project's own sqlite store."""

    experiment: str = Field(default="visionops", min_length=1, max_length=200)
    run_name: str | None = Field(default=None, description="null: '<model>-<size>px-<task>-<weights>-<commit>'.")


LOWER_IS_BETTER = frozenset({"ece"})  # evaluate metrics where smaller wins; every other one is higher-is-better


class PromoteParams(_Section):
    """When a trained model becomes the registry's champion (``promote:`` in params.yaml)."""

    registered_model: str = Field(default="visionops-classifier", min_length=1, max_length=200)
    metric: str = Field(
        default="macro_f1",
        pattern=r"^(accuracy|macro_f1|top_\d+_accuracy|roc_auc_ovr|ece)$",
        description="A test metric of evaluate's metrics.json; ece is lower-is-better, the others higher.",
    )
    min_delta: float = Field(default=0.01, ge=0, description="How much the challenger must beat the champion by.")
    min_metric: float | None = Field(default=None, description="Floor (ceiling for ece) a champion must pass.")
    require_pretrained: bool = Field(default=False, description="Refuse champions trained without pretrained weights.")
    lock_timeout_s: int = Field(
        default=1800, ge=10, description="A promotion lock older than this is taken to be from a killed process."
    )

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value of ``metric`` is better."""
        return self.metric not in LOWER_IS_BETTER


class Params(_Section):
    """The whole params.yaml: one section per stage."""

    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    train: TrainParams = Field(default_factory=TrainParams)
    augment: list[AugmentStep] = Field(default_factory=list)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    promote: PromoteParams = Field(default_factory=PromoteParams)

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


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(item["loc"])
            hint = _did_you_mean(str(item["loc"][-1]), allowed)
            lines.append(f"  - {key}: unknown key.{hint} Allowed here: {', '.join(allowed)}.")
        else:
            hint = ""
            if item["type"] == "literal_error" and isinstance(item.get("input"), str):
                hint = _did_you_mean(item["input"], re.findall(r"'([^']*)'", item["ctx"]["expected"]))
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}: {message} (got {item.get('input')!r}).{hint}")
    lines.append(f"Fix the key(s) above in {source}; its comments list the allowed values.")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping.

    Raises:
        ConfigError: a key is unknown, a value has the wrong type or is out of range; every problem is listed.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections (validate:, split:, ...), got {type(raw).__name__}"
        )
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
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}\nFix the file at the line shown.") from None
    return parse_params(raw, source=str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: plain YAML keeps the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice in the same section; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def save_resolved(section: BaseModel | dict[str, Any], out_dir: Path) -> Path:
    """Write the resolved settings a stage ran with to ``out_dir/params.json`` and return that path.

    Args:
        section: one params section, or a mapping of section name → section for stages reading several.
        out_dir: the stage's output folder.
    """
    target = Path(out_dir) / "params.json"
    write_json(target, _dump(section))
    return target


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value
