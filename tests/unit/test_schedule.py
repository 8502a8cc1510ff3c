"""The learning-rate schedules and optimizers a stage is compiled with."""

from __future__ import annotations

import itertools

import keras
import pytest

from visionops.config import StageParams, TrainParams
from visionops.training.fitting import learning_rate, make_optimizer


def _rates(stage: StageParams, steps_per_epoch: int) -> list[float]:
    rate = learning_rate(stage, steps_per_epoch)
    total = stage.epochs * steps_per_epoch
    return [float(rate(step)) if callable(rate) else rate for step in range(total + 1)]


def test_constant_without_warmup_is_a_plain_rate() -> None:
    assert learning_rate(StageParams(epochs=3, learning_rate=0.01), 10) == 0.01


def test_cosine_warms_up_linearly_then_decays_to_zero_at_the_last_step() -> None:
    rates = _rates(StageParams(epochs=5, learning_rate=0.01, schedule="cosine", warmup_epochs=1), 10)
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.005) and rates[10] == pytest.approx(0.01)
    decay = rates[10:]
    assert all(a >= b for a, b in itertools.pairwise(decay)), "monotone after the warm-up"
    assert decay[-1] == pytest.approx(0.0, abs=1e-9) and decay[20] == pytest.approx(0.005, rel=1e-3)


def test_constant_with_warmup_holds_the_rate_after_it() -> None:
    rates = _rates(StageParams(epochs=4, learning_rate=0.02, warmup_epochs=0.5), 8)
    assert rates[2] == pytest.approx(0.01) and all(r == pytest.approx(0.02) for r in rates[4:])


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW), ("sgd", keras.optimizers.SGD)]
)
def test_optimizers_decay_weights_but_not_biases_or_norms(name: str, cls: type) -> None:
    decay = 0.0 if name == "adam" else 0.1
    optimizer = make_optimizer(TrainParams(optimizer=name, weight_decay=decay), 0.01)
    assert type(optimizer) is cls
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(keras.ops.ones((8, 4)), keras.ops.zeros((8, 3)), epochs=1, verbose=0)
    decayed = {v.name for v in model.trainable_variables if optimizer.weight_decay and optimizer._use_weight_decay(v)}
    assert decayed == ({"kernel"} if decay else set()), decayed


def test_warmup_never_takes_more_than_half_the_stage() -> None:
    rates = _rates(StageParams(epochs=1, learning_rate=0.01, schedule="cosine", warmup_epochs=2), 10)
    assert rates[5] == pytest.approx(0.01) and rates[10] == pytest.approx(0.0, abs=1e-9)
