"""The served model: MLflow's pyfunc interface over a trained Keras model, taking images, answering class names.

``mlflow models serve -m models:/NAME@champion`` loads this module (the model is logged with
``loader_module="visionops.tracking.serving"`` and ships this package's code). A request carries either

* encoded images (JPEG, PNG, ...): a column ``image`` of base64 strings, the usual MLflow JSON for binary data
  (``{"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}}``, ``dataframe_records`` or
  ``{"inputs": {"image": [...]}}``), or raw bytes from Python; each is decoded and preprocessed exactly as
  evaluate does (:func:`visionops.data.preprocess.model_input`); or
* tensors for clients that already resize: ``{"inputs": [...]}`` of shape (N, size, size, 3), RGB 0–255.

and gets back, per image, the top-k class names with their probabilities (``label_1, p_1, …``; ``top_k`` is a
request param, default 3), the columns ``visionops predict`` writes.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from visionops.contracts.model import DEFAULT_TOP_K, ModelInfo
from visionops.data import preprocess

IMAGE_COLUMN = "image"


def top_k(probs: np.ndarray, classes: list[str], k: int) -> list[dict]:
    """Per row of ``probs`` (N, C): ``label_1, p_1, …, label_k, p_k``, most probable first (k at most C)."""
    k = min(k, len(classes))
    rows = []
    for p in np.asarray(probs):
        order = np.argsort(-p, kind="stable")[:k]  # (stable: ties keep the class order)
        row: dict = {}
        for rank, c in enumerate(order, start=1):
            row[f"label_{rank}"], row[f"p_{rank}"] = classes[c], round(float(p[c]), 6)
        rows.append(row)
    return rows


def _bad_request(message: str) -> Exception:
    """A request the served model cannot read: MLflow's scoring server answers HTTP 400 with ``message``."""
    from mlflow.exceptions import MlflowException  # (MLflow: imported only by the served model)

    return MlflowException.invalid_parameter_value(message)


def _image_bytes(value: Any, i: int) -> bytes:
    """One request value → encoded image bytes: bytes as they are, a str as base64."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad_request(f"image {i}: not base64. Send each image file's bytes base64-encoded.") from None
    raise _bad_request(f"image {i}: expected base64-encoded image bytes, got {type(value).__name__}")


def _is_tensor(data: Any) -> bool:
    """Numbers (pixels) rather than encoded images. (Never np.asarray on bytes: it drops trailing NUL bytes.)"""
    if isinstance(data, np.ndarray):
        return data.dtype.kind in "fiu"
    pixels = list | tuple | np.ndarray | float | int
    return isinstance(data, list | tuple) and bool(data) and isinstance(data[0], pixels)


class ImageClassifier:
    """A trained model with its class names and input size, answering top-k class names for images or tensors."""

    def __init__(self, model: Any, info: ModelInfo) -> None:
        self.model, self.info = model, info

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of a float32 batch (N, size, size, 3) in 0–255."""
        return np.asarray(self.model.predict(batch, verbose=0))

    def batch(self, model_input: Any) -> np.ndarray:
        """A request's images or tensors → the (N, size, size, 3) float32 batch the model takes.

        Raises:
            MlflowException: (HTTP 400) neither images nor tensors of the model's size, or an image that does not
                decode; the message says what was expected.
        """
        size, side = self.info.image_size, self.info.resize_side
        data = model_input
        if isinstance(data, pd.DataFrame | dict):
            if IMAGE_COLUMN not in data:
                raise _bad_request(
                    f"expected a column '{IMAGE_COLUMN}' of base64-encoded images, or tensors of shape "
                    f"(N, {size}, {size}, 3); got columns {list(data)}"
                )
            data = list(data[IMAGE_COLUMN])
        elif isinstance(data, bytes | str):
            data = [data]
        if _is_tensor(data):
            array = np.asarray(data, dtype=np.float32)
            if array.ndim == 3:
                array = array[None]
            if array.shape[1:] != (size, size, 3):
                raise _bad_request(
                    f"tensor input must have shape (N, {size}, {size}, 3) (RGB 0-255), got {array.shape}; "
                    f"or send encoded images in a column '{IMAGE_COLUMN}'"
                )
            return array
        values = list(data)
        images = []
        for i, value in enumerate(values):
            try:
                images.append(preprocess.model_input(_image_bytes(value, i), side, size, source=f"image {i}"))
            except ValueError as err:
                raise _bad_request(str(err)) from None
        if not images:
            raise _bad_request("no images in the request")
        return np.stack(images)

    def predict(self, model_input: Any, params: dict | None = None) -> pd.DataFrame:
        """MLflow's pyfunc entry point: one row per image, ``label_1, p_1, …, label_k, p_k``."""
        k = int((params or {}).get("top_k") or DEFAULT_TOP_K)
        return pd.DataFrame(top_k(self.probabilities(self.batch(model_input)), self.info.classes, k))


def _load_pyfunc(data_path: str) -> ImageClassifier:
    """MLflow's loader hook: the logged folder holds model.keras and classes.json (loaded in Keras safe mode)."""
    from visionops.training.model import load_trained

    return ImageClassifier(*load_trained(Path(data_path)))
