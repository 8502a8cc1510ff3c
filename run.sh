#!/usr/bin/env bash
# One entry point that bootstraps everything on first use (uv, the locked virtualenv), then runs:
#   ./run.sh pipeline [dvc repro args]   pull data/ from the DVC remote if absent, then `dvc repro`
#   ./run.sh test [pytest args]          the test suite (what CI runs)
#   ./run.sh ui                          the MLflow UI over the project's runs, on http://127.0.0.1:5000
#   ./run.sh prefect-server              a local Prefect server and UI on http://127.0.0.1:4200
#   ./run.sh deploy                      register prefect.yaml's `local` deployment with that server
#   ./run.sh worker                      a process worker for it (the pool is created on first use)
#   ./run.sh setup                       only install
# Set VISIONOPS_GPU=1 to install TensorFlow with CUDA instead of the CPU build; PYTHON to pick the interpreter.
set -euo pipefail
cd "$(dirname "$0")"

UV_VERSION=0.13.8
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
# Byte-compile on install: this machine sets PYTHONDONTWRITEBYTECODE and `import tensorflow` would take ~15 s.
export UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never

setup() {
  if [ ! -x .tools/bin/uv ]; then
    echo "==> installing uv $UV_VERSION into .tools/" >&2
    "$PYTHON" -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  local extra=cpu
  if [ "${VISIONOPS_GPU:-0}" = 1 ]; then extra=gpu; fi
  .tools/bin/uv sync --quiet --frozen --extra "$extra" --python "$PYTHON"
  export PATH="$PWD/.venv/bin:$PATH"
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  pipeline)
    setup
    # Restore data/ from the DVC remote only when it is absent: never overwrite a user's own data.
    [ -e data ] || dvc pull data.dvc
    dvc repro "$@" ;;
  test) setup; python -m pytest "$@" ;;
  ui) setup; visionops ui "$@" ;;
  prefect-server) setup; exec prefect server start --host 127.0.0.1 --port "${PREFECT_PORT:-4200}" "$@" ;;
  deploy)
    setup
    export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:${PREFECT_PORT:-4200}/api}
    # Workers clone this repository: its `origin` if there is one, else this checkout (a worker on this machine).
    repo=${VISIONOPS_REPO:-$(git remote get-url origin 2>/dev/null || pwd)}
    prefect variable set --overwrite visionops_repo "$repo"
    prefect work-pool inspect visionops-process >/dev/null 2>&1 || prefect work-pool create visionops-process --type process
    prefect --no-prompt deploy --name local "$@" ;;
  worker)
    setup
    export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:${PREFECT_PORT:-4200}/api}
    prefect work-pool inspect visionops-process >/dev/null 2>&1 || prefect work-pool create visionops-process --type process
    exec prefect worker start --pool visionops-process "$@" ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
