"""The promotion rule: floors, margin, direction of the metric, first model."""

from __future__ import annotations

import pytest

from visionops.config import ConfigError, PromoteParams
from visionops.params import parse_params
from visionops.stages.promote import decide


def _p(**kw) -> PromoteParams:
    return PromoteParams.model_validate({"min_delta": 0.01, **kw})


def test_first_model_passing_the_floor_is_promoted() -> None:
    assert decide(0.7, None, _p(min_metric=0.5), pretrained=False).action == "promoted"


def test_floor_rejects_even_the_first_model_and_says_which_key() -> None:
    d = decide(0.4, None, _p(min_metric=0.5), pretrained=True)
    assert d.action == "rejected" and "promote.min_metric" in d.reason and "0.4000" in d.reason


def test_require_pretrained_rejects_models_from_scratch() -> None:
    d = decide(0.99, None, _p(require_pretrained=True), pretrained=False)
    assert d.action == "rejected" and "promote.require_pretrained" in d.reason
    assert decide(0.99, None, _p(require_pretrained=True), pretrained=True).action == "promoted"


@pytest.mark.parametrize(
    ("candidate", "champion", "action"),
    [(0.80, 0.79, "promoted"), (0.795, 0.79, "kept"), (0.79, 0.79, "kept"), (0.70, 0.79, "kept")],
)
def test_margin(candidate: float, champion: float, action: str) -> None:
    d = decide(candidate, champion, _p(), pretrained=False, champion_version="3")
    assert d.action == action and "champion v3" in d.reason


def test_zero_margin_still_needs_a_strict_gain() -> None:
    assert decide(0.5, 0.5, _p(min_delta=0), pretrained=False).action == "kept"
    assert decide(0.5001, 0.5, _p(min_delta=0), pretrained=False).action == "promoted"


def test_lower_is_better_for_ece() -> None:
    p = _p(metric="ece", min_metric=0.2)
    assert not p.higher_is_better
    assert decide(0.05, 0.10, p, pretrained=False).action == "promoted"
    assert decide(0.10, 0.05, p, pretrained=False).action == "kept"
    assert decide(0.30, None, p, pretrained=False).action == "rejected"  # above the ceiling


def test_unknown_metric_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"promote\.metric"):
        parse_params({"promote": {"metric": "f1"}})
    assert parse_params({"promote": {"metric": "top_3_accuracy"}}).promote.metric == "top_3_accuracy"
