"""Progress bars for the long loops (decoding the image cache, scoring, predicting): on a terminal only.

Under DVC, Prefect or CI the output is a log, where a redrawn bar is noise, so nothing is drawn there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def interactive() -> bool:
    """Whether stderr is a terminal a person watches."""
    return sys.stderr.isatty()


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """Yield ``items``, drawing a bar of ``total`` steps on stderr when it is a terminal."""
    if not interactive() or total < 2:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track as rich_track

    yield from rich_track(items, description, total=total, console=Console(stderr=True), transient=True)


def keras_verbose() -> int:
    """Keras' ``verbose`` for fit/predict: its progress bar on a terminal, one line per epoch elsewhere (2)."""
    return 1 if interactive() else 2


def keras_quiet() -> int:
    """Keras' ``verbose`` for predict: its progress bar on a terminal, nothing in logs."""
    return 1 if interactive() else 0
