"""Where runs are logged: the tracking URI (MLFLOW_TRACKING_URI or the project's own store), checked before any work."""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from visionops.errors import ServiceUnavailable
from visionops.files import project_store, store_root


class TrackingUnavailable(ServiceUnavailable):
    """The tracking server cannot be reached; the message names it and says what to do."""


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, or the project's own store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or project_store(root)


def shown_uri(uri: str) -> str:
    """``uri`` without the ``user:password@`` part, for messages and files (credentials belong in env variables)."""
    parts = urllib.parse.urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def connect(root: Path | None = None, consequence: str = "nothing was changed") -> MlflowClient:
    """Point MLflow at the tracking URI and check that a server answers, before any work starts.

    One /health request with a 10 s timeout, no retries: a refused connection fails in well under a second,
    instead of after MLflow's retries, and before the caller imports TensorFlow or trains anything.

    Args:
        root: where to look for the project (its own store); default: the working directory.
        consequence: what the failure means for the caller's work, appended to the message.

    Raises:
        TrackingUnavailable: an http(s) server does not answer its /health endpoint within 10 s.
    """
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
                response.read()
        except OSError as err:
            raise TrackingUnavailable(
                f"MLflow tracking server {shown_uri(uri)} (set by MLFLOW_TRACKING_URI) is unreachable: "
                f"{getattr(err, 'reason', err)}. Start it (or fix the URI), or unset MLFLOW_TRACKING_URI to use the "
                f"project's own store ({project_store(root)}); {consequence}."
            ) from None
    return MlflowClient(uri)


# The experiments hold model training runs, and say so (MLflow's own tag, read by its search and its clients). The
# UI of MLflow 3.17 chooses its view from the URL instead: see visionops.tracking.links.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client: MlflowClient, name: str, root: Path | None = None) -> str:
    """The id of experiment ``name``, created on first use (artifacts beside the project's own store).

    The experiment is marked as model training (:data:`EXPERIMENT_KIND`), also an older one that has no kind yet.
    """
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if client.tracking_uri == project_store(root):  # (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI)
            location = (store_root(root) / "mlartifacts").as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent run
            found = client.get_experiment_by_name(name)
            assert found is not None, name
    for key, value in EXPERIMENT_KIND.items():
        if key not in found.tags:  # (a kind the user chose stays)
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id
