"""Links into the MLflow UI that open where a user of this project should land: its model-training view.

MLflow 3's UI chooses its view from the URL's ``workflowType`` parameter, else from the browser's stored choice (the
"GenAI | Model training" switch at its top left), else GenAI: an overview of traces and token usage, whatever the
experiment holds. The server has no setting for it (MLflow 3.17's UI code reads only those two), so every URL the
project prints or writes comes from here and carries the parameter; the UI keeps it while the user moves between an
experiment's tabs. (Its assistant panel opens once per browser profile on a first visit to a server on localhost or
127.0.0.1, also with no server setting: the README says to close it once.)
"""

from __future__ import annotations

from urllib.parse import quote

from mlflow import MlflowClient

from visionops.stack import supervisor
from visionops.tracking.connection import shown_uri

VIEW = "workflowType=machine_learning"


def ui_url(tracking_uri: str, local_ui: str | None = None) -> str:
    """The UI that shows runs logged to ``tracking_uri``: a tracking server is its own UI (shown without
    credentials); the project's own store is shown by the local UI, ``local_ui`` or else where this checkout's
    stack serves it (``./run.sh up``, or ``./run.sh ui`` on the same port)."""
    if tracking_uri.startswith(("http://", "https://")):
        return shown_uri(tracking_uri).rstrip("/")
    return (local_ui or supervisor.load().mlflow_url).rstrip("/")


def experiment_url(ui: str, experiment_id: str | None = None) -> str:
    """An experiment's runs table; without an id, the list of experiments."""
    path = f"experiments/{experiment_id}" if experiment_id else "experiments"
    return f"{ui}/#/{path}?{VIEW}"


def run_url(ui: str, experiment_id: str, run_id: str, *, tab: str = "") -> str:
    """A run's page (its metrics, params and tags), or one of its tabs, e.g. ``artifacts``."""
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}{'/' + tab if tab else ''}?{VIEW}"


def model_url(ui: str, name: str, version: str | int | None = None) -> str:
    """A registered model's versions and aliases, or one version's page."""
    path = f"models/{quote(name, safe='')}" + (f"/versions/{version}" if version is not None else "")
    return f"{ui}/#/{path}?{VIEW}"


def landing_url(ui: str, tracking_uri: str, experiment: str) -> str:
    """Where the UI should open for this project: ``experiment``'s runs table (looked up in ``tracking_uri``), or the
    list of experiments before its first run. (An experiment clicked in that list opens in the GenAI view until the
    user switches once, which is why the experiment's own page is printed whenever it exists.)"""
    found = MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    return experiment_url(ui, found.experiment_id if found else None)
