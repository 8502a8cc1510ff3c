"""Parameter sweeps: the trials of a grid or random search, and what the sweep's one promotion is decided from.

Params are given in DVC's own ``-S`` syntax and expanded by DVC's own code (``dvc exp run -S`` sweeps):
``-S 'train.finetune.learning_rate=0.001,0.002,0.004' -S 'train.dropout=0.2,0.3'`` is a 3 × 2 grid, ``range(1,5)``
works too. A random search runs ``random`` of the grid's trials, drawn with a seed. flows/sweep.py runs every trial
as a run of the training deployment (a DVC experiment and a child MLflow run each), without promoting; then the best
completed trial by ``promote.metric`` alone goes through the promote stage.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from typing import Any

from visionops.errors import UserError


class SweepError(UserError):
    """The sweep's settings cannot make trials; the message says how to write them."""


@dataclass(frozen=True)
class Trial:
    """One point of the search: its params overrides, and the name its DVC experiment gets."""

    index: int
    overrides: list[str]
    experiment: str

    @property
    def params(self) -> dict[str, str]:
        """The overridden params, ``{"train.dropout": "0.3", ...}``."""
        return dict(o.split("=", 1) for o in self.overrides)


@dataclass(frozen=True)
class TrialResult:
    """What a trial ended with: its flow run's state, its MLflow run and test metrics, or why it failed."""

    trial: Trial
    state: str  # the flow run's final state: COMPLETED, FAILED, CRASHED, ...
    run_id: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        """Completed, with test metrics."""
        return self.state == "COMPLETED" and bool(self.metrics)


def plan(settings: list[str], sweep_id: str, random: int | None = None, *, seed: int = 0) -> list[Trial]:
    """The trials of ``settings`` (DVC ``-S`` sweeps), all of them, or ``random`` of them drawn with ``seed``.

    Raises:
        SweepError: no setting, a setting that is not ``key=values``, or a random count above the grid's size.
    """
    from dvc.utils.hydra import get_hydra_sweeps

    if not settings:
        raise SweepError("a sweep needs params to vary, in DVC's -S syntax: -S 'train.dropout=0.2,0.3'")
    bad = [s for s in settings if "=" not in s]
    if bad:
        raise SweepError(f"{bad}: write each as key=value1,value2 (DVC's -S syntax), e.g. train.dropout=0.2,0.3")
    try:
        grid = [sweep["params.yaml"] for sweep in get_hydra_sweeps({"params.yaml": settings})]
    except Exception as exc:  # noqa: BLE001 - hydra's parser raises its own errors for bad syntax
        raise SweepError(f"cannot read the sweep {settings}: {exc}") from None
    if random is not None:
        if not 0 < random <= len(grid):
            raise SweepError(f"--random {random}: the grid has {len(grid)} trials; draw 1 to {len(grid)} of them")
        grid = sorted(_random.Random(seed).sample(grid, random), key=grid.index)
    return [Trial(i, overrides, f"{sweep_id}-t{i}") for i, overrides in enumerate(grid, start=1)]


def best(results: list[TrialResult], metric: str, higher_is_better: bool) -> TrialResult | None:
    """The completed trial with the best ``metric`` on the test split (ties: the earlier trial); None if none."""
    scored = [r for r in results if r.ok and isinstance(r.metrics.get(metric), int | float)]
    if not scored:
        return None
    sign = 1 if higher_is_better else -1
    return max(scored, key=lambda r: (sign * r.metrics[metric], -r.trial.index))


def table(results: list[TrialResult], metric: str) -> list[dict[str, Any]]:
    """One row per trial: its params, state, MLflow run, the sweep's metric and accuracy, or its error."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"trial": r.trial.index, "experiment": r.trial.experiment, **r.trial.params}
        row.update({"state": r.state, "run_id": r.run_id or "", metric: r.metrics.get(metric)})
        row.update({"accuracy": r.metrics.get("accuracy"), "error": r.error})
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The trials as a markdown table (the sweep's summary artifact and its MLflow run show it)."""
    if not rows:
        return "(no trial)"
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))
        return text.replace("|", "\\|").replace("\n", " ")[:120]

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
