"""The served model's input handling: base64 or raw image bytes, tensors, and clear 400 errors."""

from __future__ import annotations

import base64

import keras
import numpy as np
import pandas as pd
import pytest
from corpus import exif_rotated_jpeg, good_jpeg
from mlflow.exceptions import MlflowException

from visionops.contracts.model import ModelInfo
from visionops.data.preprocess import model_input
from visionops.tracking.serving import ImageClassifier, top_k

INFO = ModelInfo(classes=["ant", "bee", "cow"], task="classification", image_size=32, resize_side=36)


@pytest.fixture(scope="module")
def classifier() -> ImageClassifier:
    """A real (tiny, untrained) Keras classifier: its probabilities depend on the pixels it gets."""
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inputs / 255))
    keras.utils.set_random_seed(0)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(features))
    return ImageClassifier(model, INFO)


def test_top_k_most_probable_first_ties_in_class_order() -> None:
    rows = top_k(np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]]), INFO.classes, 2)
    assert rows == [
        {"label_1": "bee", "p_1": 0.5, "label_2": "cow", "p_2": 0.3},
        {"label_1": "ant", "p_1": 0.4, "label_2": "bee", "p_2": 0.4},
    ]
    assert len(top_k(np.ones((1, 3)) / 3, INFO.classes, 9)[0]) == 6, "k is at most the class count"


def test_images_in_every_request_shape_give_the_same_answer(classifier: ImageClassifier) -> None:
    images = [good_jpeg(3), exif_rotated_jpeg()]
    expected = classifier.probabilities(np.stack([model_input(b, 36, 32) for b in images]))
    encoded = [base64.b64encode(b).decode() for b in images]
    for request in (pd.DataFrame({"image": encoded}), {"image": np.array(encoded)}, images, encoded):
        answer = classifier.predict(request, params={"top_k": 3})
        assert list(answer.columns) == ["label_1", "p_1", "label_2", "p_2", "label_3", "p_3"]
        probs = answer.apply(lambda r: [r[f"p_{i}"] for i in (1, 2, 3)], axis=1).tolist()
        assert np.allclose(probs, np.sort(expected, axis=1)[:, ::-1], atol=1e-6)


def test_tensors_still_work(classifier: ImageClassifier) -> None:
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    answer = classifier.predict(pixels)
    assert len(answer) == 2 and set(answer["label_1"]) <= set(INFO.classes)
    assert classifier.predict(pixels.tolist()).equals(answer), "nested lists, as JSON `inputs` gives them"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pd.DataFrame({"img": ["x"]}), "expected a column 'image'"),
        (["bm90IGFuIGltYWdl"], "image 0: not a decodable"),
        (["%%%"], "image 0: not base64"),
        (np.zeros((1, 48, 48, 3)), r"shape \(N, 32, 32, 3\)"),
    ],
)
def test_bad_requests_are_400s_with_a_reason(classifier: ImageClassifier, request_, message: str) -> None:
    with pytest.raises(MlflowException, match=message) as caught:
        classifier.predict(request_)
    assert caught.value.get_http_status_code() == 400
