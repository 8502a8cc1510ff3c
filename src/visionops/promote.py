"""The promote stage: register the run's model, call it ``challenger``, and make it ``champion`` only if it wins.

A candidate becomes champion when it passes the floors (``promote.min_metric``, ``promote.require_pretrained``)
and beats the current champion on ``promote.metric`` by at least ``promote.min_delta`` *on the same test split*:
a champion scored on another split is re-scored on this one first, and the score is kept as a version tag so it
happens once. The replaced champion keeps the alias ``previous_champion`` (``visionops rollback`` restores it).
Decisions happen under the registry's promotion lock, so promotions racing each other are decided one after the
other and the better model ends as champion. Aliases and tags only: MLflow's stages are deprecated.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from visionops import tracking
from visionops.config import ConfigError, Params, PromoteParams
from visionops.errors import UserError
from visionops.files import write_json
from visionops.tracking import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION


@dataclass(frozen=True)
class Decision:
    """What promote did with a candidate, and why, in words a reviewer can check."""

    action: Literal["promoted", "kept", "rejected"]
    reason: str


def decide(
    candidate: float, champion: float | None, params: PromoteParams, pretrained: bool, champion_version: str = ""
) -> Decision:
    """The promotion rule, as a pure function of the two scores (on the same test split) and the floors."""
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
    if gain > 0 and gain >= params.min_delta - 1e-9:  # (tolerance: 0.80 - 0.79 is 0.01000000000000001 or less)
        return Decision("promoted", f"{versus}: better by {gain:.4f} >= promote.min_delta {params.min_delta}")
    return Decision("kept", f"{versus}: gain {gain:+.4f} is less than promote.min_delta {params.min_delta}")


def _champion_score(client, champion, split_id: str, params: Params, data_dir: Path, split_dir: Path,
                    out_dir: Path) -> tuple[float, bool]:  # fmt: skip
    """The champion's score on this split: from its tags, else by scoring its registered model now.

    Returns:
        The score, and whether the champion was re-scored now.
    """
    metric, name = params.promote.metric, params.promote.registered_model
    known = champion.tags.get(tracking.score_tag(split_id, metric))
    if known is not None:
        return float(known), False
    from visionops.evaluate import evaluate  # (TensorFlow: imported only when a re-score is needed)

    metrics = evaluate(f"models:/{name}/{champion.version}", data_dir, split_dir, params.evaluate,
                       out_dir / f"champion_v{champion.version}")  # fmt: skip
    numbers = {tracking.score_tag(split_id, k): str(v) for k, v in metrics.items() if isinstance(v, int | float)}
    tracking.tag_version(client, name, champion.version, numbers)
    if metric not in metrics:
        raise ConfigError(f"promote.metric: champion v{champion.version} re-scored without {metric!r}")
    return float(metrics[metric]), True


def promote(params: Params, run_file: Path, eval_dir: Path, data_dir: Path, split_dir: Path, out_dir: Path) -> dict:
    """Run the promote stage and write ``out_dir/decision.json``.

    Args:
        params: the whole params.yaml (``promote`` decides; ``evaluate`` is used to re-score a champion).
        run_file: the train stage's run.json (which MLflow run holds the model).
        eval_dir: the evaluate stage's folder (metrics.json: the candidate's scores and split_id).
        data_dir: the image root, for re-scoring a champion on this split.
        split_dir: the split stage's folder.
        out_dir: where decision.json (and a re-scored champion's reports) go.

    Returns:
        The content of decision.json.

    Raises:
        ConfigError: promote.metric is not among the evaluated metrics.
        UserError: the run has no logged model (its logging failed: run ``visionops log-run``).
    """
    p = params.promote
    metrics = json.loads((Path(eval_dir) / "metrics.json").read_text())
    if not isinstance(metrics.get(p.metric), int | float):
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, int | float) and k != "examples")
        raise ConfigError(f"promote.metric: {p.metric!r} is not in {eval_dir}/metrics.json; use one of {numeric}")
    client = tracking.connect(consequence="nothing was registered: rerun `visionops promote` once it answers")
    run_id = tracking.read_run_file(run_file)["run_id"]
    run_tags = tracking.run_tags(client, run_id)
    if tracking.MODEL_URI_TAG not in run_tags:
        raise UserError(f"run {run_id} has no logged model (logging failed during train): run `visionops log-run` "
                        "once the tracking server is back, then promote again.")  # fmt: skip
    split_id = metrics["split_id"]
    registered = tracking.register_version(client, p.registered_model, run_id, run_tags[tracking.MODEL_URI_TAG],
                                           tracking.version_tags(metrics, split_id, run_tags))  # fmt: skip
    with tracking.registry_lock(client, p.registered_model, p.lock_timeout_s):
        version = tracking.get_version(client, p.registered_model, registered.version)
        if "decision" in version.tags:  # promote ran for this run already (a rerun): report, do not decide twice
            result = _result(p, version, metrics[p.metric], version.tags, already=True)
        else:
            result = _decide_and_apply(client, params, version, metrics[p.metric], split_id, run_tags, data_dir,
                                       split_dir, out_dir)  # fmt: skip
    write_json(Path(out_dir) / "decision.json", result)
    return result


def _decide_and_apply(client, params: Params, version, score: float, split_id: str, run_tags: dict, data_dir: Path,
                      split_dir: Path, out_dir: Path) -> dict:  # fmt: skip
    p, name = params.promote, params.promote.registered_model
    tracking.set_alias(client, name, CHALLENGER, version.version)
    champion = tracking.version_by_alias(client, name, CHAMPION)
    champion_score, rescored = None, False
    if champion is not None:
        champion_score, rescored = _champion_score(client, champion, split_id, params, data_dir, split_dir, out_dir)
    pretrained = run_tags.get("weights.used") in ("imagenet", "file")
    decision = decide(score, champion_score, p, pretrained, champion.version if champion else "")
    tags = {"decision": decision.action, "decision.reason": decision.reason, "decision.metric": p.metric,
            "decision.at": _now()}  # fmt: skip
    if champion is not None:
        tags.update({"decision.compared_with": str(champion.version), "decision.champion_score": str(champion_score),
                     "decision.champion_rescored": str(rescored).lower()})  # fmt: skip
    if decision.action == "promoted":
        if champion is not None:
            tags["previous_champion"] = str(champion.version)  # the chain `visionops rollback` walks back
            tracking.set_alias(client, name, PREVIOUS_CHAMPION, champion.version)
        tracking.set_alias(client, name, CHAMPION, version.version)
    tracking.tag_version(client, name, version.version, tags)
    return _result(p, version, score, tags, already=False)


def _result(p: PromoteParams, version, score: float, tags: dict, already: bool) -> dict:
    return {
        "registered_model": p.registered_model, "version": str(version.version), "run_id": version.run_id,
        "model_uri": f"models:/{p.registered_model}/{version.version}", "metric": p.metric, "score": score,
        "decision": tags["decision"], "reason": tags["decision.reason"], "decided_at": tags["decision.at"],
        "champion_before": tags.get("decision.compared_with"),
        "champion_score": _float(tags.get("decision.champion_score")),
        "champion_rescored": tags.get("decision.champion_rescored") == "true", "already_decided": already,
        "params": p.model_dump(mode="json"),
    }  # fmt: skip


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _float(value: str | None) -> float | None:
    return None if value in (None, "None") else float(value)


def rollback(params: PromoteParams, reason: str) -> dict:
    """Give ``champion`` back to the version holding ``previous_champion``; tag the demoted version.

    ``previous_champion`` then moves one step further back (to the version the restored champion had replaced),
    so repeated rollbacks walk the history.

    Raises:
        UserError: no version holds ``previous_champion``.
    """
    client, name = tracking.connect(), params.registered_model
    with tracking.registry_lock(client, name, params.lock_timeout_s):
        champion = tracking.version_by_alias(client, name, CHAMPION)
        previous = tracking.version_by_alias(client, name, PREVIOUS_CHAMPION)
        if previous is None:
            raise UserError(f"{name}: no version has the alias {PREVIOUS_CHAMPION}, so there is nothing to roll "
                            "back to. See `visionops registry`.")  # fmt: skip
        tracking.set_alias(client, name, CHAMPION, previous.version)
        tracking.set_alias(client, name, PREVIOUS_CHAMPION, previous.tags.get("previous_champion"))
        if champion is not None:
            tracking.tag_version(client, name, champion.version, {"rolled_back": "true", "rolled_back.reason": reason,
                                 "rolled_back.at": _now()})  # fmt: skip
    return {"registered_model": name, "champion": str(previous.version),
            "demoted": str(champion.version) if champion else None,
            "previous_champion": previous.tags.get("previous_champion")}  # fmt: skip


def registry_rows(params: PromoteParams) -> list[dict]:
    """One row per version of the registered model, newest first: aliases, score, split, decision, lineage."""
    client = tracking.connect()
    rows = []
    for v, aliases in tracking.list_versions(client, params.registered_model):
        t = v.tags
        rows.append({
            "version": str(v.version), "aliases": ",".join(aliases),
            params.metric: t.get(f"metric.{params.metric}", ""), "split": t.get("split_id", "")[:8],
            "decision": t.get("decision", "") + (" (rolled back)" if t.get("rolled_back") == "true" else ""),
            "reason": t.get("decision.reason", ""), "run": t.get("run_name", ""), "weights": t.get("weights.used", ""),
            "created": time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.creation_timestamp / 1000)),
        })  # fmt: skip
    return rows
