# syntax=docker/dockerfile:1
# The visionops image: the locked environment (uv.lock) with exactly one TensorFlow build, picked by EXTRA:
#   gpu (default)  tensorflow[and-cuda]: CUDA and cuDNN come from NVIDIA's wheels, so a plain Python base image is
#                  enough (the host needs the NVIDIA driver and container toolkit). Run by prefect.yaml's gpu-docker
#                  and gpu-kubernetes deployments and by compose.yaml's gpu-worker.
#   cpu            tensorflow-cpu. Run by compose.yaml's mlflow, prefect-server and cpu-worker (same MLflow, Prefect
#                  and FastAPI versions as every client of the stack).
#   docker build -t registry.example.com/visionops:gpu .
#   docker build --build-arg EXTRA=cpu -t registry.example.com/visionops:cpu .
# The flow's pull steps clone the repository at run time, so the image holds the environment, not the code.
# No HEALTHCHECK here: the same image runs servers, workers and one-off flow-run containers, which need different
# checks (or none); compose.yaml gives each service its own.
FROM python:3.11.14-slim-bookworm

ARG EXTRA=gpu
# Keep in step with UV_VERSION in run.sh: the lock file is read by the same uv everywhere.
ARG UV_VERSION=0.13.8

RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
# A fixed UID, so volumes and Kubernetes' runAsNonRoot see the same non-root user on every host.
RUN groupadd --gid 10001 visionops \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin visionops \
    && install -d -o 10001 -g 10001 /work

WORKDIR /opt/visionops
# Byte-compiled (import tensorflow ~6 s instead of ~15 s), no interpreter downloads, no cache left in the layer.
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/visionops/.venv
# Dependencies first: this layer changes only with uv.lock, not with every edit under src/.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --extra "${EXTRA}"
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable --extra "${EXTRA}"
ENV PATH=/opt/visionops/.venv/bin:$PATH \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true \
    GX_ANALYTICS_ENABLED=false NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=2

# The environment stays root-owned (read-only to the user); each flow run works in its own clone under /work.
USER 10001:10001
WORKDIR /work
