"""The export stage: the trained model as a TensorFlow SavedModel, TFLite and ONNX, each checked against Keras.

Writes ``saved_model/`` (Keras ``model.export``: signature ``serve``/``serving_default``, float32 RGB 0–255 of the
model's input size in, class probabilities out), ``model_float32.tflite``, ``model_int8.tflite`` (dynamic-range
quantisation: int8 weights, float activations, no calibration data needed), ``model.onnx`` (tf2onnx from the
SavedModel; input ``image``, NHWC), ``labels.txt`` (one class per line, in output order) and ``export.json``.
Each format runs on up to ``CHECK_IMAGES`` test images, preprocessed as evaluate does, and export.json records
the largest difference from the Keras model's probabilities and how often the top class agrees, next to the
tolerance the format is held to (:data:`TOLERANCES`).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from visionops.contracts.data import read_split
from visionops.data.preprocess import model_input
from visionops.errors import UserError
from visionops.files import atomic_write_bytes, atomic_write_text, write_json
from visionops.tracking import record, registry, runs
from visionops.training.model import load_trained

log = logging.getLogger(__name__)
CHECK_IMAGES = 32
# Largest allowed |p_export - p_keras| over every class and checked image. SavedModel runs the same TensorFlow
# graph (differences come from kernel choice only); TFLite float32 fuses and reorders float ops; dynamic-range
# int8 rounds every weight to 8 bits, which moves probabilities by up to a few hundredths on small models.
TOLERANCES = {"saved_model": 1e-5, "tflite_float32": 1e-4, "tflite_int8": 0.05, "onnx": 1e-4}
ONNX_OPSET = 17


class ExportError(UserError):
    """A converter failed; the message holds the end of its output."""


def to_onnx(saved: Path, path: Path) -> None:
    """Convert a SavedModel to ONNX with tf2onnx's converter command.

    (Its Python API converts the Keras function instead, and for EfficientNet that graph asks for the Normalization
    layer's constants as extra inputs, which onnxruntime refuses; the SavedModel path converts them as constants.)

    Raises:
        ExportError: the converter failed.
    """
    staging = path.with_name(f".{path.name}.tmp")
    cmd = [
        sys.executable,
        "-m",
        "tf2onnx.convert",
        "--saved-model",
        str(saved),
        "--output",
        str(staging),
        "--opset",
        str(ONNX_OPSET),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ExportError(
            f"ONNX conversion of {saved} failed (tf2onnx exited {done.returncode}): {done.stderr[-2000:]}"
        )
    staging.replace(path)


def run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    """Run an ONNX model on a float32 batch in onnxruntime (CPU); returns its first output."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch.astype(np.float32)})[0]


def run_tflite(content: bytes, batch: np.ndarray) -> np.ndarray:
    """Run a TFLite model on a float32 batch in TensorFlow's TFLite interpreter; returns its first output."""
    with warnings.catch_warnings():  # TF 2.21 warns that the interpreter moves to the ai-edge-litert package
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interpreter = tf.lite.Interpreter(model_content=content)
    source = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(source["index"], list(batch.shape))  # (exported with a dynamic batch size)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], batch.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _compare(name: str, path: Path, probs: np.ndarray, reference: np.ndarray) -> dict:
    diff = float(np.abs(probs - reference).max())
    agree = float((probs.argmax(axis=1) == reference.argmax(axis=1)).mean())
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    ok = diff <= TOLERANCES[name]
    if not ok:
        log.warning("%s differs from the Keras model by %.3g, more than its tolerance %g", name, diff, TOLERANCES[name])
    return {
        "path": path.name,
        "bytes": size,
        "max_abs_diff": diff,
        "top1_agreement": agree,
        "tolerance": TOLERANCES[name],
        "within_tolerance": ok,
    }


@dataclass(frozen=True)
class Export:
    """What the export stage produced: export.json's content, and the training run it was logged to."""

    report: dict
    run_id: str | None = None
    warnings: list[str] = field(default_factory=list)


def export(model_dir: Path | str, data_dir: Path, split_dir: Path, *, out_dir: Path) -> Export:
    """Run the export stage.

    Args:
        model_dir: model.keras (classes.json beside it), the train stage's folder, or an MLflow model URI.
        data_dir: the image root the split lists are relative to (test images check the exports).
        split_dir: the split stage's output folder.
        out_dir: the stage's output folder (``artifacts/export``).

    Returns:
        export.json's content; for the train stage's own model, the run the files were logged into (``export/``).
    """
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    with registry.local_model(model_dir) as (path, known):
        model, info = load_trained(path, known)
    test = read_split(split_dir)[0]["test"].head(CHECK_IMAGES)
    side, size = info.resize_side, info.image_size
    batch = np.stack([model_input((data_dir / p).read_bytes(), side, size, source=p) for p in test["path"]])
    reference = model.predict(batch, verbose=0)

    saved, staging = out_dir / "saved_model", out_dir / ".saved_model.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.export(str(staging), format="tf_saved_model", verbose=False)
    shutil.rmtree(saved, ignore_errors=True)  # (this stage's own previous output)
    staging.rename(saved)  # complete or absent: a killed export never leaves half a SavedModel
    loaded = tf.saved_model.load(str(saved))  # (held in a name: its variables die with the object)
    formats = {"saved_model": _compare("saved_model", saved, loaded.serve(batch).numpy(), reference)}
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    for name, optimizations in (("tflite_float32", []), ("tflite_int8", [tf.lite.Optimize.DEFAULT])):
        converter.optimizations = optimizations  # DEFAULT without a dataset: dynamic-range int8 weights
        content = converter.convert()
        path = out_dir / f"model_{name.removeprefix('tflite_')}.tflite"
        atomic_write_bytes(path, content)
        formats[name] = _compare(name, path, run_tflite(content, batch), reference)
    to_onnx(saved, out_dir / "model.onnx")
    formats["onnx"] = _compare("onnx", out_dir / "model.onnx", run_onnx(out_dir / "model.onnx", batch), reference)
    atomic_write_text(out_dir / "labels.txt", "".join(f"{c}\n" for c in info.classes))
    result = {
        "formats": formats,
        "check_images": len(batch),
        "classes": info.classes,
        "image_size": size,
        "task": info.task,
        "input": "float32 RGB 0-255, (N, image_size, image_size, 3), centre crop",
    }
    write_json(out_dir / "export.json", result)
    run_id, not_logged = runs.log_into_training_run(
        model_dir, "the exports", lambda client, run: record.log_export(client, run, out_dir)
    )
    return Export(result, run_id, not_logged)
