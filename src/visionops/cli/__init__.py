"""Command line: one command per stage (dvc.yaml, the Prefect flow and people all call these), the registry, the
MLflow UI and the local stack. ``visionops -h`` lists them; the exit codes are in :mod:`visionops.errors`.
"""

from visionops.cli import pipeline, servers  # noqa: F401 - registers the commands (in this order, for -h)
from visionops.cli.common import app

__all__ = ["app"]
