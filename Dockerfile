# The GPU worker image: the locked environment with tensorflow[and-cuda] (CUDA and cuDNN come from NVIDIA's wheels,
# so a plain Python base image is enough; the host needs the NVIDIA driver and the container toolkit).
# The flow's pull steps clone the repository at run time, so the image holds the environment, not the code.
#   docker build -t registry.example.com/visionops:gpu .   &&   docker push registry.example.com/visionops:gpu
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv==0.13.8

WORKDIR /opt/visionops
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy VIRTUAL_ENV=/opt/visionops/.venv
RUN uv sync --frozen --no-dev --extra gpu
ENV PATH=/opt/visionops/.venv/bin:$PATH \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 TF_CPP_MIN_LOG_LEVEL=2

# Each flow run works in its own clone under the work folder.
WORKDIR /work
