"""The settings of params.yaml, typed: one pydantic model per section, every default and its meaning defined here once.

Every section forbids unknown keys, so a typo such as ``split.test_ratoi`` stops the run with a message naming the
key instead of silently running with the default. The committed params.yaml is generated from these models
(:func:`visionops.params.render`: each field's default and description become a key, its value and its comment),
and tests/unit/test_config.py fails when the two drift apart. Reading a params.yaml: :mod:`visionops.params`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from visionops.errors import UserError
from visionops.files import climbs_out
from visionops.variants import SIZE_STEP, VARIANT_SIZES, Variant

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
    """Thresholds of the validate stage: what a usable image and a usable dataset are."""

    classes: list[str] | None = Field(
        default=None, description="null: every non-empty folder of data/; or a list to insist on"
    )
    allowed_formats: list[ImageFormat] = Field(
        default=["JPEG", "PNG", "BMP", "WEBP"], min_length=1, description="by content, not by file extension"
    )
    min_side: int = Field(default=32, ge=1, description="pixels; smaller images are quarantined")
    max_pixels: int = Field(
        default=40_000_000, ge=1, description="width*height from the header, checked before decoding"
    )
    channels: list[Literal[1, 2, 3, 4]] = Field(
        default=[1, 2, 3, 4], min_length=1, description="grey, grey+alpha, RGB, RGBA/CMYK (all converted to RGB later)"
    )
    min_images_per_class: int = Field(default=10, ge=1, description="below this the stage fails")
    max_imbalance_ratio: float = Field(default=10.0, ge=1.0, description="largest class / smallest class")

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
    """Train / val / test by a seeded hash of each image's content, class by class."""

    test_ratio: float = Field(default=0.2, gt=0.0, lt=1.0, description="share of each class held out for test")
    val_ratio: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="share of the rest kept for validation (early stopping)"
    )
    seed: int = Field(default=42, ge=0)

    @model_validator(mode="after")
    def _train_left(self) -> SplitParams:
        if (1 - self.test_ratio) * (1 - self.val_ratio) < 0.05:
            raise ValueError("test_ratio and val_ratio leave less than 5% of the images for training")
        return self


class StageParams(_Section):
    """One fine-tuning stage: how long, how fast, and how the rate changes over the stage."""

    epochs: int = Field(default=3, ge=0)
    learning_rate: float = Field(default=0.001, gt=0, le=1)
    schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="cosine: per step, from the peak to 0 at the last epoch; or constant"
    )
    warmup_epochs: float = Field(
        default=0.0, ge=0, description="linear warm-up from 0 to the peak first (at most half the stage)"
    )


class HeadParams(StageParams):
    """Stage 1: frozen backbone, the head trained on cached features (seconds per epoch)."""

    epochs: int = Field(default=40, ge=0)
    views: int = Field(
        default=2,
        ge=1,
        le=64,
        description="per training image: centre crop + views-1 augmented ones, embedded once; 1 per epoch",
    )


class FinetuneParams(StageParams):
    """Stage 2: the top blocks unfrozen, on augmented images."""

    epochs: int = Field(default=10, ge=0)
    learning_rate: float = Field(default=0.0003, gt=0, le=1, description="peak; ~0.002 from scratch (weights: null)")
    schedule: Literal["constant", "cosine"] = Field(
        default="cosine", description="per step, from the peak to 0 at the last epoch; or constant"
    )
    unfreeze_blocks: int | Literal["all"] = Field(
        default=3, description="the top blocks (3: block5..7 and the head convolution); or all"
    )
    batchnorm: Literal["auto", "frozen", "trainable"] = Field(
        default="auto", description="auto: frozen over pretrained weights, trainable from scratch"
    )

    @field_validator("unfreeze_blocks")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("use a number of blocks >= 1, or 'all'")
        return value


class TrainParams(_Section):
    """Two-stage fine-tuning of EfficientNet: every key here can change the model (dvc.yaml's train reads them all)."""

    task: Literal["classification", "orientation"] = Field(
        default="classification", description="or orientation: learn 0/90/180/270 degrees from upright images"
    )
    model: Variant = Field(
        default="EfficientNetLite2",
        description="EfficientNetLite0..2 (ImageNet weights installed), B0..B7, V2*: `visionops weights`",
    )
    image_size: int | None = Field(
        default=260,
        ge=32,
        le=1024,
        description=f"null: the variant's default (Lite0 224, Lite2 260, B3 300 ...); else a multiple of {SIZE_STEP}",
    )
    weights: str | None = Field(
        default="imagenet",
        description="imagenet (Lite: the installed package; B/V2: Keras' download), a weights file, or null",
    )
    weights_fallback: Literal["stop", "random"] = Field(
        default="stop", description="when imagenet cannot be had: stop, or random (train from scratch, loudly)"
    )
    batch_size: int = Field(default=32, ge=1, le=4096, description="per replica (GPU)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        default="adam", description="adam, adamw or sgd (momentum 0.9, Nesterov); a fresh one per stage"
    )
    weight_decay: float = Field(
        default=0.0, ge=0, lt=1, description="decoupled (adamw, sgd); never on biases or BatchNormalization"
    )
    crop_scale: tuple[float, float] | None = Field(
        default=None,
        description="null: fixed-size random crops of the cached square; or random-resized: [0.35, 1.0]",
    )
    dropout: float = Field(default=0.2, ge=0, lt=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    class_weights: bool = Field(default=True, description="weight classes inversely to their frequency")
    early_stopping_patience: int = Field(
        default=5, ge=1, description="epochs without a better val_loss, per stage; the best epoch's weights are kept"
    )
    early_stopping_min_delta: float = Field(
        default=0.001, ge=0, description="a smaller fall of val_loss is not better (a learnt set stops instead)"
    )
    resize_margin: float = Field(
        default=1.15, ge=1.0, le=2.0, description="cache images 15% larger than image_size; training takes random crops"
    )
    seed: int = Field(default=42, ge=0)
    head: HeadParams = Field(default_factory=HeadParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)

    @property
    def size(self) -> int:
        """The training image side: ``image_size`` or the variant's default."""
        return self.image_size or VARIANT_SIZES[self.model]

    @property
    def cached_side(self) -> int:
        """The side of the cached images: the training size plus the crop margin."""
        return round(self.size * self.resize_margin)

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


DEFAULT_AUGMENT = (
    {"name": "HorizontalFlip", "p": 0.5},
    # border_mode 4: reflect (cv2.BORDER_REFLECT_101)
    {"name": "Affine", "p": 1.0, "scale": [0.8, 1.2], "translate_percent": [-0.1, 0.1], "border_mode": 4},
    {"name": "RandomBrightnessContrast", "p": 0.5, "brightness_limit": 0.2, "contrast_limit": 0.2},
)


class EvaluateParams(_Section):
    """Scoring the test split (and a hold-out folder)."""

    top_k: int = Field(default=2, ge=1, description="top-k accuracy and k in predictions")
    calibration_bins: int = Field(default=10, ge=2, le=100, description="bins of the expected calibration error")
    holdout_dir: str | None = Field(
        default=None,
        description="an extra class-per-folder set scored alike (no DVC dependency: dvc repro -f evaluate)",
    )
    gallery_per_class: int = Field(
        default=12, ge=1, le=200, description="misclassified test images shown per true class in errors/gallery.*"
    )

    @field_validator("holdout_dir")
    @classmethod
    def _holdout_inside(cls, value: str | None) -> str | None:
        return _no_climbing(value, "hold-out folder")


class TrackingParams(_Section):
    """MLflow: MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db (visionops ui). Changes where, not what."""

    experiment: str = Field(default="visionops-sample", min_length=1, max_length=200)
    run_name: str | None = Field(default=None, description="null: <model>-<size>px-<task>-<weights>-<git commit>")


LOWER_IS_BETTER = frozenset({"ece"})  # evaluate metrics where smaller wins; every other one is higher-is-better


class PromoteParams(_Section):
    """The MLflow Model Registry: aliases champion / challenger / previous_champion."""

    registered_model: str = Field(default="visionops-sample-classifier", min_length=1, max_length=200)
    metric: str = Field(
        default="macro_f1",
        pattern=r"^(accuracy|macro_f1|top_\d+_accuracy|roc_auc_ovr|ece)$",
        description="a test metric from evaluate (ece: lower is better)",
    )
    min_delta: float = Field(
        default=0.01, ge=0, description="the challenger must beat the champion by this much, on the same test split"
    )
    min_metric: float | None = Field(
        default=0.5, description="floor: never make a worse model champion, even the first one"
    )
    require_pretrained: bool = Field(default=False, description="true: refuse champions trained from random weights")
    confidence: float | None = Field(
        default=0.95,
        gt=0,
        lt=1,
        description="promote only if the gain's paired bootstrap interval at this level is "
        "above 0, else `indistinguishable`; null: min_delta alone decides",
    )
    max_class_drop: float | None = Field(
        default=0.1,
        ge=0,
        le=1,
        description="refuse a model whose recall of any class is below the champion's by "
        "more than this; null: no per-class check",
    )

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value of ``metric`` is better."""
        return self.metric not in LOWER_IS_BETTER


class RuntimeParams(_Section):
    """How the stages run, never what they compute: no stage lists this section in dvc.yaml, so a change reruns none."""

    workers: int = Field(default=2, ge=1, le=64, description="threads running the augmentation (train)")
    cache: Literal["auto", "memory", "disk"] = Field(
        default="auto",
        description="train's decoded images: memory while train + val fit half the available memory, else disk "
        "(artifacts/.cache/*.npy, memory-mapped, reused by later runs); or memory; or disk",
    )
    inference_batch_size: int = Field(
        default=64, ge=1, description="images per forward pass when scoring (evaluate, promote's re-scoring)"
    )
    lock_timeout_s: int = Field(
        default=1800, ge=10, description="a promotion lock older than this belongs to a killed process and is broken"
    )


class Params(_Section):
    """The whole params.yaml: one section per stage, and how they run."""

    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    train: TrainParams = Field(default_factory=TrainParams)
    augment: list[AugmentStep] = Field(
        default_factory=lambda: [AugmentStep.model_validate(step) for step in DEFAULT_AUGMENT],
        description="albumentations 2.x transforms, applied in order to training images only (name + arguments); "
        "border_mode 4 is reflect (cv2.BORDER_REFLECT_101)",
    )
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    promote: PromoteParams = Field(default_factory=PromoteParams)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
