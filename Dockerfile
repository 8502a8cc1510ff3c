# The visionops image: the locked environment (uv.lock) with exactly one TensorFlow build, picked by EXTRA:
#   gpu (default)  tensorflow[and-cuda]: CUDA and cuDNN come from NVIDIA's wheels, so a plain Python base image is
#                  enough (the host needs the NVIDIA driver and container toolkit). Run by prefect.yaml's gpu-docker
#                  and gpu-kubernetes deployments and by compose.yaml's gpu-worker.
#   cpu            tensorflow-cpu. Run by compose.yaml's mlflow, prefect-server and cpu-worker (same MLflow, Prefect
#                  and FastAPI versions as every client of the stack) and by prefect.yaml's cpu-docker deployment.
#   docker build -t registry.example.com/visionops:gpu .
#   docker build --build-arg EXTRA=cpu -t registry.example.com/visionops:cpu .
#   docker/build-images.sh        the CPU image and the stand-ins, on a host that cannot pull from Docker Hub
# BASE_IMAGE: any Debian bookworm image with Python 3.11, venv and ca-certificates; docker/build-images.sh passes one
# made with debootstrap when python:3.11.14-slim-bookworm cannot be pulled. Empty means the default (prefect.yaml's
# build steps pass an unset VISIONOPS_BASE_IMAGE as an empty string).
# The flow's pull steps clone the repository at run time, so the image holds the environment, not the code.
# No HEALTHCHECK here: the same image runs servers, workers and one-off flow-run containers, which need different
# checks (or none); compose.yaml gives each service its own.
# Plain Dockerfile syntax (no `# syntax=` line, no RUN --mount): BuildKit would fetch a frontend image from Docker Hub
# for the first, and prefect.yaml's build step (docker-py) uses the classic builder, which has neither.
ARG DEFAULT_BASE_IMAGE=python:3.11.14-slim-bookworm
ARG BASE_IMAGE=

# --- Stage 1: the environment. The stages that talk to PyPI (this one and the next) alone see docker/certs/ ------
FROM ${BASE_IMAGE:-$DEFAULT_BASE_IMAGE} AS env
# docker/build-images.sh tags this stage (its layer cache) and prunes untagged images with this label: stale builds.
LABEL org.visionops.image=env

ARG EXTRA=gpu
# Keep in step with UV_VERSION in run.sh: the lock file is read by the same uv everywhere.
ARG UV_VERSION=0.13.8

# Extra CA certificates (*.crt) for a TLS-intercepting proxy between the build and PyPI: git-ignored, usually none
# (docker/build-images.sh copies VISIONOPS_BUILD_CA there). They stay in this stage: the image below copies the
# environment, not the certificates.
COPY docker/certs/ /usr/local/share/ca-certificates/visionops/
RUN update-ca-certificates >/dev/null
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# uv in a venv of its own: works on python:*-slim (pip) and on Debian's python3 (no pip, PEP 668) alike.
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir --quiet "uv==${UV_VERSION}"

WORKDIR /opt/visionops
# Byte-compiled (import tensorflow ~6 s instead of ~15 s), no interpreter downloads, no cache left in the layer.
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/visionops/.venv
# Dependencies only: this stage changes with pyproject.toml and uv.lock, not with every edit under src/.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --extra "${EXTRA}"

# --- Stage 2: the project, installed (not editable) into that environment -------------------------------------------
FROM env AS project
# A build argument ends with the stage that declares it: declared again, with the same default.
ARG EXTRA=gpu
COPY README.md ./
COPY src ./src
# Its files alone (package, metadata, the `visionops` command) go to the image: an edit of src/ or README.md then
# rebuilds a small layer on top of the environment's, instead of copying the 2.9 GB environment again.
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-editable --extra "${EXTRA}" \
    && cd .venv && mkdir /project && cp -a --parents bin/visionops lib/python3*/site-packages/visionops* /project/

# --- Stage 3: the image ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE:-$DEFAULT_BASE_IMAGE}

ARG EXTRA=gpu
LABEL org.visionops.image=visionops org.opencontainers.image.title=visionops \
      org.opencontainers.image.description="visionops, TensorFlow ${EXTRA}"

RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
# A fixed UID, so volumes and Kubernetes' runAsNonRoot see the same non-root user on every host.
RUN groupadd --gid 10001 visionops \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin visionops \
    && install -d -o 10001 -g 10001 /work

# The environment stays root-owned (read-only to the user); each flow run works in its own clone under /work.
COPY --from=env /opt/visionops/.venv /opt/visionops/.venv
COPY --from=project /project/ /opt/visionops/.venv/
ENV VIRTUAL_ENV=/opt/visionops/.venv PATH=/opt/visionops/.venv/bin:$PATH \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true \
    GX_ANALYTICS_ENABLED=false NO_ALBUMENTATIONS_UPDATE=1 TF_CPP_MIN_LOG_LEVEL=2

USER 10001:10001
WORKDIR /work
