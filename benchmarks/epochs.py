"""What the benchmarks that time Keras epochs share: a callback recording each epoch's wall time."""

from __future__ import annotations

import time

import keras


class EpochTimes(keras.callbacks.Callback):
    """Wall time of each epoch, from its start to its end: the fit call's own setup is left out."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)
