"""The albumentations 2.x training augmentation, declared in params.yaml (``augment:``), checked strictly.

albumentations 2 only *warns* on arguments it does not know (1.x names such as ``var_limit`` are silently
ignored), so the pipeline is built with warnings turned into errors: a typo stops the run, naming the step.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np

from visionops.config import AugmentStep, ConfigError


def transform_names() -> list[str]:
    """Every albumentations image transform that can be named in params.yaml."""
    abstract = ("Basic", "Dual", "ImageOnly", "Base")
    return sorted(
        name
        for name, obj in vars(A).items()
        if isinstance(obj, type) and issubclass(obj, A.BasicTransform) and not name.startswith(abstract)
    )


def is_geometric(transform_cls: type) -> bool:
    """True for transforms that move pixels (flips, rotations, crops, affine, perspective...).

    albumentations marks them as ``DualTransform``: they must also move masks and boxes. Pixel-level ones
    (colour, noise, blur) are ``ImageOnlyTransform``.
    """
    return issubclass(transform_cls, A.DualTransform)


def build_augment(steps: Sequence[AugmentStep], task: str, seed: int) -> A.Compose:
    """Build the training augmentation from params.

    Args:
        steps: the ``augment`` list of params.yaml, in order.
        task: ``classification`` or ``orientation``; the latter refuses geometric transforms, which would
            change the very orientation the labels describe.
        seed: seeds the pipeline; ``dataset`` reseeds it per batch so results do not depend on thread timing.

    Raises:
        ConfigError: unknown transform, bad or unknown argument, or a geometric transform for orientation.
    """
    known = transform_names()
    transforms = []
    for i, step in enumerate(steps):
        where = f"augment[{i}] ({step.name})"
        cls = getattr(A, step.name, None)
        if step.name not in known or cls is None:
            close = difflib.get_close_matches(step.name, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else " See the albumentations docs for the names."
            raise ConfigError(f"params.yaml: augment[{i}].name: unknown albumentations transform '{step.name}'.{hint}")
        if task == "orientation" and is_geometric(cls):
            raise ConfigError(
                f"params.yaml: {where}: a geometric transform is refused for train.task=orientation, because it "
                "changes the orientation the labels describe. Use pixel-level transforms only (colour, noise, blur)."
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                transforms.append(cls(**step.args))
        except (UserWarning, TypeError, ValueError) as err:
            raise ConfigError(
                f"params.yaml: {where}: {str(err).strip()}. Check the argument names of albumentations "
                f"{A.__version__} (1.x names are not accepted)."
            ) from None
    return A.Compose(transforms, seed=seed)


def preview_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """Tile a batch of RGB uint8 images (N, H, W, 3) into one BGR image for cv2.imwrite."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    return cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)
