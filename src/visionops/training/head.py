"""Fine-tuning's first stage on cached features: the classifier's head trained on the frozen backbone's embeddings.

The head (dropout + dense softmax) is the full model's own layers wrapped in a model of their own (:func:`head_model`),
so training it trains the classifier's head. Its inputs are each example's pooled features in one of its views
(:mod:`visionops.training.embeddings`), drawn per epoch: the backbone runs once per view and run, or never when
earlier runs stored them, instead of once per example and epoch.
"""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np

from visionops.config import AugmentStep, TrainParams
from visionops.contracts.model import WeightsUsed
from visionops.data.dataset import Batches
from visionops.training.embeddings import EmbeddingStore, FeatureSpace, cache_root, embed, view_keys

EMBED_BATCH = 64


def head_model(model: keras.Model) -> keras.Model:
    """The classifier's head alone, on pooled features: its own ``head_dropout`` and ``predictions`` layers, shared."""
    dropout, dense = model.get_layer("head_dropout"), model.get_layer("predictions")
    features = keras.Input(dropout.input.shape[1:], name="features")
    return keras.Model(features, dense(dropout(features)), name="head")


def augment_key(params: TrainParams, augment: list[AugmentStep]) -> str:
    """What a training view depends on besides the image and the feature space: the augmentation, crops and seed."""
    config = {
        "augment": [a.model_dump() for a in augment],
        "crop_scale": params.crop_scale,
        "task": params.task,
        "seed": params.seed,
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


class FeatureBatches(keras.utils.PyDataset):
    """Batches of (features, one-hot labels, sample weights), each example in a view drawn per epoch (training)."""

    def __init__(self, features: np.ndarray, source: Batches, seed: int) -> None:
        """``features``: (examples, views, dimensions), in the example order of ``source``, whose labels, class
        weights, batch size and role (training: shuffled, views drawn; else in order, view 0) they take."""
        super().__init__()
        self.features, self.source, self.seed = features, source, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source)

    def on_epoch_end(self) -> None:
        """Draw the next epoch's order and views."""
        self.epoch += 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, (n, views) = self.source, self.features.shape[:2]
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if s.training else np.arange(n)
        chosen = order[i * s.batch_size : (i + 1) * s.batch_size]
        drawn = np.random.default_rng([self.seed, self.epoch, i]).integers(0, views, len(chosen))
        view = drawn if s.training else np.zeros(len(chosen), dtype=int)
        labels = s.label[chosen]
        return self.features[chosen, view], np.eye(s.num_classes, dtype=np.float32)[labels], s.weights[labels]


def _example_features(
    extractor: keras.Model,
    batches: Batches,
    shas: list[str],
    *,
    views: int,
    store: EmbeddingStore,
    aug_key: str,
    seed: int,
) -> np.ndarray:
    """(examples, views, dimensions) features of ``batches``' examples: view 0 and ``views - 1`` training views."""
    example_shas = [shas[i] for i in batches.index]
    found = []
    for view in range(views):
        keys = view_keys(example_shas, batches.rotation.tolist(), view=view, augment_key=aug_key)

        def make_input(j: int, view: int = view) -> np.ndarray:
            if view == 0:
                return batches.view(j, None)
            content = int(example_shas[j][:16], 16)
            return batches.view(j, [seed, view, content, int(batches.rotation[j])])

        def predict(x: np.ndarray) -> np.ndarray:
            return extractor.predict(x, batch_size=EMBED_BATCH, verbose=0)

        found.append(
            embed(
                store,
                keys,
                make_input=make_input,
                predict=predict,
                what=f"views ({'centre' if view == 0 else f'training {view}'})",
            )
        )
    return np.stack(found, axis=1)


def feature_batches(
    backbone: keras.Model,
    weights: WeightsUsed,
    *,
    params: TrainParams,
    augment: list[AugmentStep],
    data: dict[str, tuple[Batches | None, list[str]]],
) -> tuple[FeatureBatches, FeatureBatches | None]:
    """The head stage's training and validation batches of features, embedding what the store lacks.

    Args:
        backbone: the frozen backbone; a copy outside any distribution strategy computes the features, so no
            collective op depends on what one worker found stored.
        weights: its initial weights: pretrained ones (known sha256) are stored in the machine's cache; random ones
            are embedded for this run only.
        params: the ``train`` section; augment: the ``augment`` list.
        data: per split (``train``, ``val``), its image batches and the content hash of each image.
    """
    extractor = keras.models.clone_model(backbone)
    extractor.set_weights(backbone.get_weights())
    precision = keras.mixed_precision.global_policy().name
    space = FeatureSpace(params.model, weights.sha256 or "", params.size, params.cached_side, precision)
    store = EmbeddingStore(space, cache_root() if weights.pretrained and weights.sha256 else None)
    key = augment_key(params, augment)
    train_batches, train_shas = data["train"]
    assert train_batches is not None
    train = FeatureBatches(
        _example_features(
            extractor, train_batches, train_shas, views=params.head.views, store=store, aug_key=key, seed=params.seed
        ),
        train_batches,
        params.seed,
    )
    val_batches, val_shas = data["val"]
    val = None
    if val_batches is not None:
        val = FeatureBatches(
            _example_features(extractor, val_batches, val_shas, views=1, store=store, aug_key=key, seed=params.seed),
            val_batches,
            params.seed,
        )
    return train, val
