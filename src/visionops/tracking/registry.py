"""The Model Registry: versions, aliases, tags, the promotion lock, and models:/ URIs made local.

promote decides; these functions only read and write. Aliases and tags only: MLflow's stages are deprecated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from visionops.config import PromoteParams
from visionops.contracts.model import INTERFACE_KEYS, ModelInfo, is_model_uri
from visionops.errors import UserError
from visionops.tracking.connection import connect, shown_uri, tracking_uri

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER, PREVIOUS_CHAMPION = "champion", "challenger", "previous_champion"


class ModelUnreadable(UserError):
    """A logged or registered model's files cannot be read, or it was logged without visionops' metadata."""


def _checked_metadata(uri: str, metadata: dict | None) -> ModelInfo:
    missing = set(INTERFACE_KEYS) - set(metadata or {})
    if missing:
        raise ModelUnreadable(
            f"{uri}: logged without {sorted(missing)} in its metadata; log it with `visionops train`."
        )
    return ModelInfo.from_dict(dict(metadata or {}))


def model_metadata(uri: str) -> ModelInfo:
    """The metadata (classes, task, image_size, resize_side, model) of a logged or registered model, read from its
    MLmodel file alone (the weights are not downloaded).

    Raises:
        ModelUnreadable: its files are gone or unreachable, or it carries no visionops metadata.
    """
    try:
        metadata = mlflow.models.get_model_info(uri).metadata
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise ModelUnreadable(
            f"the files of {uri} cannot be read from {shown_uri(tracking_uri())} ({getattr(exc, 'message', exc)}): "
            "deleted or moved, or the artifact store is unreachable"
        ) from None
    return _checked_metadata(uri, metadata)


def utc_now() -> str:
    """The time for a decision or rollback tag: ISO 8601, UTC, seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.contextmanager
def local_model(ref: Path | str) -> Iterator[tuple[Path, ModelInfo | None]]:
    """A model reference made local: (model.keras or its folder, its info when the registry supplied it).

    A path is yielded as it is (its classes.json is read by the loader); a model URI is downloaded into a temporary
    folder, removed afterwards, and its class names and input size come from the logged model's metadata.

    Raises:
        ModelUnreadable: the URI names no model in the tracking store, or one without visionops' metadata.
        TrackingUnavailable: the tracking server does not answer.
    """
    if not is_model_uri(ref):
        yield Path(ref), None
        return
    uri = str(ref)
    connect()
    with tempfile.TemporaryDirectory(prefix="visionops-model-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except mlflow.exceptions.MlflowException as exc:
            raise ModelUnreadable(
                f"{uri}: no such model in {shown_uri(tracking_uri())} ({exc.message}). List them with "
                "`visionops registry`."
            ) from None
        info = _checked_metadata(uri, mlflow.models.Model.load(local / "MLmodel").metadata)
        yield next(local.rglob("*.keras")), info


def publish_card(client: MlflowClient, name: str, version: str, *, model_uri: str, card: str) -> None:
    """Make ``card`` (markdown) the description of version ``version`` and log it with its model (model_card.md)."""
    client.update_model_version(name, version, description=card)
    with tempfile.TemporaryDirectory(prefix="visionops-card-") as tmp:
        path = Path(tmp) / "model_card.md"
        path.write_text(card, encoding="utf-8")
        client.log_model_artifact(model_uri.removeprefix("models:/"), str(path))


def version_tags(metrics: dict, split_id: str, run_tags: dict[str, str]) -> dict[str, str]:
    """Tags a new model version carries: its test metrics (also as a score on its split) and its lineage."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    tags = {f"metric.{k}": str(v) for k, v in numbers.items()}
    tags.update({score_tag(split_id, k): str(v) for k, v in numbers.items()})
    tags["split_id"] = split_id
    lineage = (
        "git.commit",
        "git.dirty",
        "data.dvc_md5",
        "weights.used",
        "weights.source",
        "weights.sha256",
        "task",
        "model",
    )
    lineage_keys = {k: k for k in lineage}
    lineage_keys["mlflow.runName"] = "run_name"
    tags.update({ours: run_tags[theirs] for theirs, ours in lineage_keys.items() if theirs in run_tags})
    return tags


def score_tag(split_id: str, metric: str) -> str:
    """The version tag holding a model's ``metric`` on the test set of split ``split_id``."""
    return f"score.{split_id[:16]}.{metric}"


def register_version(client: MlflowClient, name: str, run_id: str, *, model_uri: str, tags: dict[str, str]):
    """The registry version of the run's model: created on first call, found again on later ones (idempotent)."""
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if found:
        return min(found, key=lambda v: int(v.version))
    with contextlib.redirect_stdout(None):  # register_model prints "Created version ..." itself
        return mlflow.register_model(model_uri, name, tags=tags)


def version_by_alias(client: MlflowClient, name: str, alias: str):
    """The version holding ``alias``, or None (no such alias, or no such registered model yet)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def list_versions(client: MlflowClient, name: str) -> list[tuple[Any, list[str]]]:
    """Every version of registered model ``name``, newest first, with its aliases.

    (The version search leaves aliases out; the registered model lists them all in one call.)
    """
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(number), []).append(alias)
    return [(v, sorted(aliases.get(str(v.version), []))) for v in sorted(versions, key=lambda v: -int(v.version))]


@contextlib.contextmanager
def registry_lock(client: MlflowClient, name: str, stale_after_s: float, *, poll_s: float = 0.5):
    """Hold the promotion lock of registered model ``name`` while deciding and moving aliases.

    The lock is the registered model ``<name>.lock``: creating a registered model is the one atomic
    create-if-absent the MLflow API offers (a unique name in the server's database), so it works between
    processes on different machines with nothing but the tracking server. A lock older than ``stale_after_s``
    was left by a killed process and is broken.
    """
    lock = f"{name}.lock"
    holder = f"{socket.gethostname()}:{os.getpid()}"
    while True:
        try:
            description = f"visionops promotion lock of {name}; held by {holder}"
            client.create_registered_model(lock, tags={"holder": holder}, description=description)
            break
        except mlflow.exceptions.MlflowException as exc:
            # Taken: RESOURCE_ALREADY_EXISTS, or RESOURCE_DOES_NOT_EXIST when the holder released it between the
            # server's failed insert and its read of the existing model (MLflow's SQL store reads it to word the
            # error): the lock was free again a moment ago; either way, wait and try again.
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # (released meanwhile: just retry)
            held = client.get_registered_model(lock)
            age = time.time() - held.creation_timestamp / 1000
            if age > stale_after_s:
                log.warning(
                    "breaking the promotion lock %s held by %s for %.0f s (runtime.lock_timeout_s)",
                    lock,
                    held.tags.get("holder"),
                    age,
                )
                client.delete_registered_model(lock)
        time.sleep(poll_s * (1 + random.random()))  # jitter: waiters do not retry in lockstep
    try:
        yield
    finally:
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            client.delete_registered_model(lock)


def get_version(client: MlflowClient, name: str, number: str | int):
    """Version ``number`` of registered model ``name``, read afresh (tags and aliases as they are now)."""
    return client.get_model_version(name, str(number))


def set_alias(client: MlflowClient, name: str, alias: str, *, number: str | int | None) -> None:
    """Point ``alias`` at version ``number``; None removes the alias."""
    if number is None:
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # (already absent)
            client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, str(number))


def tag_version(client: MlflowClient, name: str, number: str | int, *, tags: dict[str, str]) -> None:
    """Set tags on a model version (decisions, scores on other splits, rollbacks)."""
    for key, value in tags.items():
        client.set_model_version_tag(name, str(number), key, value)


def rollback(params: PromoteParams, reason: str, lock_timeout_s: float) -> dict:
    """Give ``champion`` back to the version holding ``previous_champion``; tag the demoted version.

    ``previous_champion`` then moves one step further back (to the version the restored champion had replaced),
    so repeated rollbacks walk the history.

    Raises:
        UserError: no version holds ``previous_champion``.
    """
    client, name = connect(), params.registered_model
    with registry_lock(client, name, lock_timeout_s):
        champion = version_by_alias(client, name, CHAMPION)
        previous = version_by_alias(client, name, PREVIOUS_CHAMPION)
        if previous is None:
            raise UserError(
                f"{name}: no version has the alias {PREVIOUS_CHAMPION}, so there is nothing to roll "
                "back to. See `visionops registry`."
            )
        set_alias(client, name, CHAMPION, number=previous.version)
        set_alias(client, name, PREVIOUS_CHAMPION, number=previous.tags.get("previous_champion"))
        if champion is not None:
            tag_version(
                client,
                name,
                champion.version,
                tags={"rolled_back": "true", "rolled_back.reason": reason, "rolled_back.at": utc_now()},
            )
    return {
        "registered_model": name,
        "champion": str(previous.version),
        "demoted": str(champion.version) if champion else None,
        "previous_champion": previous.tags.get("previous_champion"),
    }


def rows(params: PromoteParams) -> list[dict]:
    """One row per version of the registered model, newest first: aliases, score, split, decision, lineage."""
    client = connect()
    rows = []
    for v, aliases in list_versions(client, params.registered_model):
        t = v.tags
        rows.append(
            {
                "version": str(v.version),
                "aliases": ",".join(aliases),
                params.metric: t.get(f"metric.{params.metric}", ""),
                "split": t.get("split_id", "")[:8],
                "decision": t.get("decision", "") + (" (rolled back)" if t.get("rolled_back") == "true" else ""),
                "gain": t.get("decision.interval", ""),
                "reason": t.get("decision.reason", ""),
                "run": t.get("run_name", ""),
                "weights": t.get("weights.used", ""),
                "created": time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.creation_timestamp / 1000)),
            }
        )
    return rows
