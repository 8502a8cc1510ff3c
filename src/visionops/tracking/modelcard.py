"""The model card of a registered version: what it was trained on, how, how well, its limits, how to use it.

Generated from the stages' own files, read through their contracts (the split, the model's classes, its initial weights
and resolved params, the test metrics and per-class table) and the run's lineage tags, so it states only recorded
facts.
promote sets it as the version's description and logs it with the model (``model_card.md``).
"""

from __future__ import annotations

from visionops.contracts.data import SplitInfo
from visionops.contracts.layout import Artifacts
from visionops.contracts.model import ModelInfo, WeightsUsed
from visionops.contracts.results import Promotion, TestMetrics, read_per_class, read_resolved

LOW_F1 = 0.5  # per-class F1 below this is listed as a known limit


def facts(artifacts: Artifacts) -> dict:
    """What the card states, read from the stages' folders."""
    return {
        "split": SplitInfo.read(artifacts.split),
        "info": ModelInfo.read(artifacts.train),
        "weights": WeightsUsed.read(artifacts.train),
        "recipe": read_resolved(artifacts.train),
        "metrics": TestMetrics.read(artifacts.evaluate),
        "per_class": read_per_class(artifacts.evaluate),
    }


def _limits(f: dict) -> list[str]:
    info, train, split = f["info"], f["recipe"]["train"], f["split"]
    limits = []
    if not f["weights"].pretrained:
        limits.append(
            "Trained from random initialisation (no pretrained weights): expect it to generalise worse "
            "than a fine-tuned ImageNet model, especially on small datasets."
        )
    if info.image_size < 128:
        limits.append(f"Small input ({info.image_size} px): fine detail is lost before the model sees an image.")
    tested = split.totals["test"]
    if tested < 50 * len(info.classes) and info.task == "classification":
        limits.append(
            f"Tested on {tested} images ({tested // max(1, len(info.classes))} per class on average): "
            "metrics are uncertain by several points."
        )
    weak = [f"{r['class']} (F1 {r['f1']:.2f})" for r in f["per_class"] if r["f1"] < LOW_F1]
    if weak:
        limits.append(f"Weak classes on the test split: {', '.join(weak)}.")
    if train["task"] == "orientation":
        limits.append("Answers the rotation (0/90/180/270° counter-clockwise) of an image, not its content.")
    names = ", ".join(map(str, info.classes))
    limits.append(f"Knows only the classes {names}: any image gets one of them, even when it shows none.")
    return limits


def render(f: dict, name: str, version: str, *, run: dict, decision: Promotion) -> str:
    """The card as markdown.

    Args:
        f: :func:`facts`.
        name, version: the registered model and version.
        run: ``run_id``, ``run_name``, ``model_uri`` and the run's lineage tags (``data.dvc_md5``, ``git.commit``).
        decision: promote's decision.
    """
    info, split, metrics, train = f["info"], f["split"], f["metrics"], f["recipe"]["train"]
    counts = "\n".join(
        f"| {c} | " + " | ".join(str(split.counts[s].get(c, 0)) for s in ("train", "val", "test")) + " |"
        for c in split.classes
    )
    numbers = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.numbers().items() if k != "examples")
    per_class = "\n".join(
        f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {int(r['support'])} |"
        for r in f["per_class"]
    )
    w: WeightsUsed = f["weights"]
    weights = f"**{w.used}**" + (f" (requested {w.requested})" if w.fallback_reason else "")
    if w.source:
        weights += f" from {w.source}, file sha256 `{w.sha256}`"
        weights += f", converted from a {w.format}" if (w.format or "").startswith("PyTorch") else ""
        weights += f"; licence {w.licence}" if w.licence else ""
    scratch = "" if w.pretrained else "\n\n**Trained from random weights, with no pretrained start.**"
    augment = ", ".join(a["name"] for a in f["recipe"]["augment"]) or "none"
    head, finetune = train["head"], train["finetune"]
    uri = f"models:/{name}/{version}"
    limits = "\n".join(f"- {line}" for line in _limits(f))
    return f"""# {name} v{version}

{info.task} model, {info.model} at {info.image_size} px, {len(info.classes)} classes:
{", ".join(map(str, info.classes))} (in output order). Registry decision: **{decision.decision}**,
{decision.reason}.{scratch}

## Data
- data.dvc md5 `{run.get("data.dvc_md5") or "unknown"}`, split id `{split.split_id[:16]}`, git commit
  `{run.get("git.commit", "unknown")[:12]}`{" (dirty)" if run.get("git.dirty") == "true" else ""}
- images per split: train {split.totals["train"]}, val {split.totals["val"]}, test {split.totals["test"]}

| class | train | val | test |
|---|---:|---:|---:|
{counts}

## Training recipe
- {info.model}, weights {weights}; input {info.image_size} px, centre crop of a {info.resize_side}-px
  square (training: random crops of it)
- stage 1 (frozen backbone, head only, on cached features of {head.get("views", 1)} views per image):
  {head["epochs"]} epochs at learning rate {head["learning_rate"]}; stage 2 (unfreeze {finetune["unfreeze_blocks"]}
  blocks, BatchNorm {finetune["batchnorm"]}): {finetune["epochs"]} epochs at {finetune["learning_rate"]}
- batch {train["batch_size"]}, dropout {train["dropout"]}, label smoothing {train["label_smoothing"]}, class
  weights {train["class_weights"]}, early stopping patience {train["early_stopping_patience"]}, seed {train["seed"]}
- augmentation: {augment}
- MLflow run `{run["run_name"]}` ({run["run_id"]})

## Metrics (test split `{metrics.split_id[:16]}`, {metrics.examples} examples)
| metric | value |
|---|---:|
{numbers}

| class | precision | recall | F1 | support |
|---|---:|---:|---:|---:|
{per_class}

## Known limits
{limits}

## Load and serve
```bash
visionops predict photos/ --model {uri} --out predictions.csv
mlflow models serve -m {uri} --env-manager local --host 127.0.0.1 --port 5001
curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
  -d "{{\\"dataframe_split\\": {{\\"columns\\": [\\"image\\"], \\"data\\": [[\\"$(base64 -w0 photo.jpg)\\"]]}}}}"
```
The served model takes base64-encoded images (any format OpenCV reads; EXIF orientation applied) in a column
`image`, or float32 RGB 0-255 tensors of shape (N, {info.image_size}, {info.image_size}, 3), and answers
`label_1, p_1, ...` per image (request param `top_k`). In Python: `mlflow.pyfunc.load_model("{uri}")`.
"""
