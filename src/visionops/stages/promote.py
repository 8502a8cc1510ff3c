"""The promote stage: register the run's model, call it ``challenger``, and make it ``champion`` only if it wins.

A candidate is compared with the champion only when both answer the same question: same task, same classes in
the same order, same input size and preprocessing (:func:`visionops.contracts.mismatch`, checked before any
scoring). Otherwise it stays ``challenger`` with the decision ``incomparable``, naming both sides, and the stage
succeeds: register it under a new ``promote.registered_model``, or replace the champion knowingly with
``visionops promote --replace-champion "<why>"`` (the floors still apply; the why is kept as a tag).
A comparable candidate becomes champion when it passes the floors (``promote.min_metric``,
``promote.require_pretrained``) and beats the current champion on ``promote.metric`` by at least
``promote.min_delta`` *on the same test split*: a champion scored on another split is re-scored on this one first,
and the score is kept as a version tag so it happens once. Each version gets a generated model card
(:mod:`visionops.tracking.modelcard`) as its description. The replaced champion keeps the alias ``previous_champion``
(``visionops rollback`` restores it).
Decisions happen under the registry's promotion lock, so promotions racing each other are decided one after the
other and the better model ends as champion. Aliases and tags only: MLflow's stages are deprecated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from visionops.config import ConfigError, Params, PromoteParams
from visionops.contracts.layout import Artifacts
from visionops.contracts.model import RunInfo
from visionops.contracts.results import PREDICTIONS_FILE, Promotion, TestMetrics
from visionops.errors import UserError
from visionops.files import atomic_write_text
from visionops.interfaces import mismatch
from visionops.tracking import connection, modelcard, record, registry, runs
from visionops.tracking.registry import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from visionops.training.evidence import Evidence, compare


@dataclass(frozen=True)
class Decision:
    """What promote did with a candidate, and why, in words a reviewer can check."""

    action: Literal["promoted", "kept", "rejected", "incomparable", "indistinguishable"]
    reason: str


def decide(
    candidate: float,
    champion: float | None,
    params: PromoteParams,
    *,
    pretrained: bool,
    champion_version: str = "",
    evidence: Evidence | None = None,
) -> Decision:
    """The promotion rule, as a pure function of the two scores (on the same test split), the floors and, when both
    models' predictions were compared, the evidence (:mod:`visionops.training.evidence`)."""
    metric, better = params.metric, params.higher_is_better
    if params.require_pretrained and not pretrained:
        return Decision("rejected", "trained without pretrained weights (promote.require_pretrained: true)")
    if params.min_metric is not None and (candidate < params.min_metric if better else candidate > params.min_metric):
        side = "below the floor" if better else "above the ceiling"
        return Decision("rejected", f"{metric} {candidate:.4f} is {side} promote.min_metric {params.min_metric}")
    if champion is None:
        return Decision("promoted", f"first model to pass the floors ({metric} {candidate:.4f})")
    gain = candidate - champion if better else champion - candidate
    versus = f"{metric} {candidate:.4f} vs champion v{champion_version} {champion:.4f}"
    enough = gain > 0 and gain >= params.min_delta - 1e-9  # (tolerance: 0.80 - 0.79 is 0.01000000000000001 or less)
    if evidence is not None and params.max_class_drop is not None:
        name, drop = evidence.worst_class()
        if drop > params.max_class_drop + 1e-9:
            ours, theirs = evidence.recall[name]
            return Decision(
                "rejected",
                f"{versus}, but class {name!r} is recalled {ours:.3f} against the champion's {theirs:.3f}: "
                f"{drop:.3f} lower, more than promote.max_class_drop {params.max_class_drop}",
            )
    if evidence is None or params.confidence is None:
        if enough:
            return Decision("promoted", f"{versus}: better by {gain:.4f} >= promote.min_delta {params.min_delta}")
        return Decision("kept", f"{versus}: gain {gain:+.4f} is less than promote.min_delta {params.min_delta}")
    shown = (
        f"{versus}: gain {evidence.interval()} (paired bootstrap over {evidence.images} test images, "
        f"{evidence.one_right} right by one model only)"
    )
    if evidence.high < 0:
        return Decision("kept", f"{shown}: worse")
    if not evidence.low > 0:
        return Decision("indistinguishable", f"{shown}: the interval includes 0, so the champion stays")
    if not enough:
        return Decision("kept", f"{shown}: better, by less than promote.min_delta {params.min_delta}")
    return Decision("promoted", f"{shown}: better, by at least promote.min_delta {params.min_delta}")


def _champion_scored(
    client, champion, split_id: str, params: Params, data_dir: Path, split_dir: Path, out_dir: Path
) -> tuple[float, bool, Path]:
    """The champion's score and predictions on this split: kept in the registry and its run, else made by scoring
    its registered model now (and kept for the next comparison).

    Returns:
        The score, whether the champion was re-scored now, and its predictions file.
    """
    metric, name = params.promote.metric, params.promote.registered_model
    reports = out_dir / f"champion_v{champion.version}"
    known = champion.tags.get(registry.score_tag(split_id, metric))
    own = champion.tags.get("split_id") == split_id
    stored = record.stored_predictions(client, champion.run_id, split_id, own=own, dst=reports)
    if known is not None and stored is not None:
        return float(known), False, stored
    from visionops.training.model import load_trained  # (TensorFlow: imported only when a re-score is needed)
    from visionops.training.scoring import score_split

    uri = f"models:/{name}/{champion.version}"
    with registry.local_model(uri) as (path, info):
        model, info = load_trained(path, info)
    scored = score_split(
        model,
        info,
        uri,
        data_dir=data_dir,
        split_dir=split_dir,
        params=params.evaluate,
        batch_size=params.runtime.inference_batch_size,
        out_dir=reports,
    )
    metrics = TestMetrics.from_dict(scored)
    metrics.write(reports)  # beside its predictions and confusion matrix, as evaluate's are
    record.keep_rescored(client, champion.run_id, split_id, predictions=reports / PREDICTIONS_FILE)
    numbers = {registry.score_tag(split_id, k): str(v) for k, v in metrics.numbers().items()}
    registry.tag_version(client, name, champion.version, tags=numbers)
    score = metrics.value(metric)
    if score is None:
        raise ConfigError(f"promote.metric: champion v{champion.version} re-scored without {metric!r}")
    return score, True, reports / PREDICTIONS_FILE


def promote(
    params: Params,
    artifacts: Artifacts,
    *,
    data_dir: Path,
    out_dir: Path,
    replace_champion: str | None = None,
) -> Promotion:
    """Run the promote stage and write ``out_dir/decision.json`` and ``out_dir/model_card.md``.

    Args:
        params: the whole params.yaml (``promote`` decides; ``evaluate`` is used to re-score a champion).
        artifacts: the stages' folders: train's run.json (which MLflow run holds the model), evaluate's metrics (the
            candidate's scores and split id), split's lists (to re-score a champion on them), and the rest of what the
            model card states.
        data_dir: the image root, for re-scoring a champion on this split.
        out_dir: where decision.json, model_card.md (and a re-scored champion's reports) go.
        replace_champion: why the candidate may replace the champion without being compared (``--replace-champion``);
            the floors still apply. None: compare, or refuse to compare unlike models.

    Returns:
        The content of decision.json.

    Raises:
        ConfigError: promote.metric is not among the evaluated metrics.
        UserError: the run has no logged model (its logging failed: run ``visionops log-run``).
    """
    p = params.promote
    metrics = TestMetrics.read(artifacts.evaluate)
    score = metrics.value(p.metric)
    if score is None:
        numeric = sorted(k for k in metrics.numbers() if k != "examples")
        raise ConfigError(
            f"promote.metric: {p.metric!r} is not in {artifacts.evaluate}'s test metrics; use one of {numeric}"
        )
    client = connection.connect(consequence="nothing was registered: rerun `visionops promote` once it answers")
    run_id = RunInfo.read(artifacts.train).run_id
    run_tags = runs.run_tags(client, run_id)
    if record.MODEL_URI_TAG not in run_tags:
        raise UserError(
            f"run {run_id} has no logged model (logging failed during train): run `visionops log-run` "
            "once the tracking server is back, then promote again."
        )
    split_id = metrics.split_id
    registered = registry.register_version(
        client,
        p.registered_model,
        run_id,
        model_uri=run_tags[record.MODEL_URI_TAG],
        tags=registry.version_tags(metrics.numbers(), split_id, run_tags),
    )
    with registry.registry_lock(client, p.registered_model, params.runtime.lock_timeout_s):
        version = registry.get_version(client, p.registered_model, registered.version)
        # A rerun for the same run reports the earlier decision instead of deciding twice, unless it is asked to
        # replace the champion (after an `incomparable` decision, say) and the version is not champion already.
        replace = None if version.tags.get("decision") == "promoted" else replace_champion
        if "decision" in version.tags and replace is None:
            result = _result(p, version, score, version.tags, already=True)
        else:
            predictions = Path(artifacts.evaluate) / PREDICTIONS_FILE
            candidate = Candidate(score, split_id, run_tags, predictions, replace)
            result = _decide_and_apply(client, params, version, candidate, data_dir, artifacts.split, out_dir)
    card = modelcard.render(
        modelcard.facts(artifacts),
        p.registered_model,
        result.version,
        run={
            **run_tags,
            "run_id": run_id,
            "run_name": run_tags.get("mlflow.runName", run_id),
            "model_uri": run_tags[record.MODEL_URI_TAG],
        },
        decision=result,
    )
    registry.publish_card(
        client, p.registered_model, result.version, model_uri=run_tags[record.MODEL_URI_TAG], card=card
    )
    atomic_write_text(Path(out_dir) / "model_card.md", card)
    result.write(out_dir)
    return result


@dataclass(frozen=True)
class Candidate:
    """The model being promoted: its score on its test split, its run's tags, and a replacement request."""

    score: float
    split_id: str
    run_tags: dict
    predictions: Path  # evaluate's, of the same split
    replace: str | None = None


def _unlike(candidate_uri: str, champion) -> str | None:
    """Why the candidate cannot be compared with the champion (different interface, unreadable files), or None."""
    ours = registry.model_metadata(candidate_uri)
    try:
        theirs = registry.model_metadata(champion.source)
    except registry.ModelUnreadable as exc:
        return f"champion v{champion.version} cannot be read ({exc}), so it can neither be scored nor served"
    return mismatch(ours, theirs, f"champion v{champion.version}")


def _decide_and_apply(
    client, params: Params, version, candidate: Candidate, data_dir: Path, split_dir: Path, out_dir: Path
) -> Promotion:
    p, name, score = params.promote, params.promote.registered_model, candidate.score
    registry.set_alias(client, name, CHALLENGER, number=version.version)
    champion = registry.version_by_alias(client, name, CHAMPION)
    pretrained = candidate.run_tags.get("weights.used") in ("imagenet", "file")
    tags = {"decision.metric": p.metric, "decision.at": registry.utc_now()}
    unlike = _unlike(candidate.run_tags[record.MODEL_URI_TAG], champion) if champion is not None else None
    if champion is not None:
        tags["decision.compared_with"] = str(champion.version)
    if champion is not None and candidate.replace is not None:  # a person decided: floors only, the why is kept
        floors = decide(score, None, p, pretrained=pretrained)
        reason = f"replaces champion v{champion.version} uncompared (--replace-champion: {candidate.replace})"
        reason += f"; {unlike}" if unlike else ""
        decision = Decision(floors.action, reason if floors.action == "promoted" else floors.reason)
        tags["decision.replace_reason"] = candidate.replace
    elif unlike is not None:
        fix = (
            f"Register it under a new name (e.g. `-S promote.registered_model={name}-{_suffix(candidate.run_tags)}`)"
            f', or replace the champion knowingly: `visionops promote --replace-champion "<why>"`'
        )
        decision = Decision("incomparable", f"not compared with champion v{champion.version}: {unlike}. {fix}")
    else:
        champion_score, evidence = None, None
        if champion is not None:
            champion_score, rescored, predictions = _champion_scored(
                client, champion, candidate.split_id, params, data_dir, split_dir, out_dir
            )
            tags.update(
                {"decision.champion_score": str(champion_score), "decision.champion_rescored": str(rescored).lower()}
            )
            if p.confidence is not None or p.max_class_drop is not None:  # (both null: the margin alone decides)
                evidence = compare(
                    candidate.predictions,
                    predictions,
                    p.metric,
                    higher_is_better=p.higher_is_better,
                    confidence=p.confidence or 0.95,  # (null: recorded, not used)
                    seed=int(candidate.split_id[:8], 16),
                    bins=params.evaluate.calibration_bins,
                )
                tags.update(
                    {"decision.interval": evidence.interval(), "decision.evidence": json.dumps(evidence.to_dict())}
                )
        decision = decide(
            score,
            champion_score,
            p,
            pretrained=pretrained,
            champion_version=champion.version if champion else "",
            evidence=evidence,
        )
    tags.update({"decision": decision.action, "decision.reason": decision.reason})
    if decision.action == "promoted":
        if champion is not None:
            tags["previous_champion"] = str(champion.version)  # the chain `visionops rollback` walks back
            registry.set_alias(client, name, PREVIOUS_CHAMPION, number=champion.version)
        registry.set_alias(client, name, CHAMPION, number=version.version)
    registry.tag_version(client, name, version.version, tags=tags)
    return _result(p, version, score, tags, already=False)


def _suffix(run_tags: dict) -> str:
    """A registered-model suffix that tells this kind of model apart: its task, or its run's short commit."""
    task = run_tags.get("task", "classification")
    return task if task != "classification" else f"{run_tags.get('git.commit', 'new')[:7]}"


def _result(p: PromoteParams, version, score: float, tags: dict, already: bool) -> Promotion:
    return Promotion(
        registered_model=p.registered_model,
        version=str(version.version),
        run_id=version.run_id,
        model_uri=f"models:/{p.registered_model}/{version.version}",
        metric=p.metric,
        score=score,
        decision=tags["decision"],
        reason=tags["decision.reason"],
        decided_at=tags["decision.at"],
        champion_before=tags.get("decision.compared_with"),
        champion_score=_float(tags.get("decision.champion_score")),
        champion_rescored=tags.get("decision.champion_rescored") == "true",
        already_decided=already,
        replace_reason=tags.get("decision.replace_reason"),
        evidence=json.loads(tags["decision.evidence"]) if "decision.evidence" in tags else None,
        params=p.model_dump(mode="json"),
    )


def _float(value: str | None) -> float | None:
    return None if value in (None, "None") else float(value)
