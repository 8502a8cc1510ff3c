"""visionops: reproducible EfficientNet fine-tuning on DVC-versioned image folders."""

import os
from importlib import metadata as _metadata

# Keep every run offline and quiet before any third-party import reads these (see ../shared/STACK-NOTES.md).
# setdefault: a user who exports another value keeps it.
for _key, _value in {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}.items():
    os.environ.setdefault(_key, _value)

try:  # one source of the version: pyproject.toml, as installed
    __version__ = _metadata.version("visionops")
except _metadata.PackageNotFoundError:  # (the package's code shipped inside a logged model, not installed)
    __version__ = "0+unknown"
