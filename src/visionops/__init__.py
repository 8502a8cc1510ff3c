"""visionops: reproducible EfficientNet fine-tuning on DVC-versioned image folders.

Importing the package is the one place that sets environment variables: defaults (``setdefault``: a value the user
exports wins) that keep every run offline, quiet and quick to fail, before any third-party import reads them.
No other module changes ``os.environ`` when it is imported (tests/unit/test_architecture.py).
"""

import os
from importlib import metadata as _metadata

ENVIRONMENT_DEFAULTS = {
    # offline and quiet: no update checks, analytics or telemetry; TensorFlow's C++ logs at warnings
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # MLflow retries a failed request 7 times with exponential backoff (minutes in all) before giving up; the stages
    # save everything locally first, so a few quick retries are enough and an outage costs seconds, not minutes.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    # A server proxying an S3 artifact store (`--serve-artifacts`, the team stack) tells MLflow 3 clients to download
    # (and upload large files) straight from S3 with presigned URLs naming the server's own S3 endpoint (compose:
    # http://minio:9000), which laptops and workers on other hosts cannot resolve; the stack promises that clients need
    # nothing but MLFLOW_TRACKING_URI, so every transfer goes through the tracking server.
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false",
    # MLflow prints its own "View run at" link when a run ends on a server, one that opens the UI's GenAI view; the
    # commands print theirs instead (visionops.tracking.links), which open the model-training view.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
for _key, _value in ENVIRONMENT_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

try:  # one source of the version: pyproject.toml, as installed
    __version__ = _metadata.version("visionops")
except _metadata.PackageNotFoundError:  # (the package's code shipped inside a logged model, not installed)
    __version__ = "0+unknown"
