"""The promotion rule: floors, margin, direction of the metric, first model."""

from __future__ import annotations

import pytest

from visionops.config import ConfigError, PromoteParams
from visionops.params import parse_params
from visionops.stages.promote import decide
from visionops.training.evidence import Evidence


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


def _evidence(low: float, high: float, *, gain: float | None = None, recall: dict | None = None) -> Evidence:
    """What the comparison of two prediction files measured (the rule only reads it)."""
    middle = (low + high) / 2 if gain is None else gain
    return Evidence(
        metric="macro_f1",
        candidate=0.8 + middle,
        champion=0.8,
        gain=middle,
        low=low,
        high=high,
        confidence=0.95,
        images=176,
        one_right=9,
        recall=recall or {"a": (0.9, 0.9), "b": (0.8, 0.8)},
    )


@pytest.mark.parametrize(
    ("low", "high", "action", "words"),
    [
        (-0.01, 0.05, "indistinguishable", "the interval includes 0"),
        (0.0, 0.04, "indistinguishable", "the interval includes 0"),
        (0.005, 0.05, "promoted", "better, by at least promote.min_delta"),
        (-0.06, -0.01, "kept", "worse"),
    ],
)
def test_the_gain_must_be_clear_of_zero(low: float, high: float, action: str, words: str) -> None:
    evidence = _evidence(low, high)
    d = decide(0.8 + evidence.gain, 0.8, _p(), pretrained=True, champion_version="2", evidence=evidence)
    assert d.action == action and words in d.reason, d
    assert evidence.interval() in d.reason and "176 test images" in d.reason and "champion v2" in d.reason


def test_a_clear_gain_below_the_margin_keeps_the_champion() -> None:
    evidence = _evidence(0.001, 0.009, gain=0.005)
    d = decide(0.805, 0.8, _p(min_delta=0.01), pretrained=True, evidence=evidence)
    assert d.action == "kept" and "less than promote.min_delta 0.01" in d.reason


def test_a_lost_class_is_refused_by_name_even_when_the_average_is_better() -> None:
    lost = {"cat": (0.95, 0.90), "dog": (0.40, 0.85), "eel": (1.0, 0.5)}
    d = decide(0.9, 0.8, _p(max_class_drop=0.1), pretrained=True, evidence=_evidence(0.05, 0.15, recall=lost))
    assert d.action == "rejected" and "'dog'" in d.reason and "promote.max_class_drop 0.1" in d.reason, d
    assert "0.400" in d.reason and "0.850" in d.reason
    small = {"cat": (0.95, 0.90), "dog": (0.80, 0.85)}  # 0.05 lower: within the allowance
    assert decide(0.9, 0.8, _p(), pretrained=True, evidence=_evidence(0.05, 0.15, recall=small)).action == "promoted"
    off = _p(max_class_drop=None)
    assert decide(0.9, 0.8, off, pretrained=True, evidence=_evidence(0.05, 0.15, recall=lost)).action == "promoted"


def test_without_a_confidence_the_margin_alone_decides() -> None:
    p = _p(confidence=None, min_delta=0.01)
    assert decide(0.82, 0.8, p, pretrained=True, evidence=_evidence(-0.02, 0.06)).action == "promoted"
    assert decide(0.805, 0.8, p, pretrained=True, evidence=_evidence(-0.02, 0.06)).action == "kept"


def test_confidence_and_class_drop_are_checked_with_their_keys() -> None:
    with pytest.raises(ConfigError, match=r"promote\.confidence"):
        parse_params({"promote": {"confidence": 1.5}})
    with pytest.raises(ConfigError, match=r"promote\.max_class_drop"):
        parse_params({"promote": {"max_class_drop": -0.1}})
