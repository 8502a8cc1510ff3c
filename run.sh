#!/usr/bin/env bash
# One entry point that installs what it needs on first use (uv, the locked .venv), then runs:
#   ./run.sh pipeline [dvc repro args]   restore data/ if absent, then `dvc repro`
#   ./run.sh test [pytest args]          the test suite (what CI runs; with no args, with its coverage floor)
#   ./run.sh up [--workers N]            the local stack on 127.0.0.1: MLflow UI, Prefect server and UI, process worker(s)
#   ./run.sh status | down | logs        the stack's state and URLs | stop it and all its processes | follow its logs
#   ./run.sh deploy                      register prefect.yaml's `local` deployment with the stack's Prefect server
#   ./run.sh prefect ARGS...             the prefect CLI against the stack, e.g. `./run.sh prefect deployment ls`
#   ./run.sh sweep -S 'key=v1,v2' ...    a parameter sweep over the stack's workers (flows/sweep.py; --concurrency N)
#   ./run.sh ui                          the MLflow UI alone, in the foreground (when the stack is not up)
#   ./run.sh setup [--cpu|--gpu] [--with docker,kubernetes]   only install; the choice is kept for later commands
# PYTHON picks the interpreter for a new .venv (3.11, 3.12 or 3.13); VISIONOPS_GPU=1 is the same as `setup --gpu`.
set -euo pipefail
cd "$(dirname "$0")"

UV_VERSION=0.13.8
CHOICE=.tools/setup-choice # the CPU/GPU build and worker extras chosen last: every later sync keeps them
export UV_PYTHON_DOWNLOADS=never # interpreters come from the machine, never from the network

supported() { # the Python range of pyproject.toml (TensorFlow 2.21 has wheels for 3.11-3.13)
  "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' 2>/dev/null
}

find_python() { # the real path of a supported interpreter (never a pyenv shim: uv would not match it to .venv)
  local candidate found=()
  for candidate in ${PYTHON:-} python3.11 python3.12 python3.13 python3; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    if supported "$candidate"; then
      "$candidate" -c 'import sys; print(sys.executable)'
      return
    fi
    found+=("$candidate $("$candidate" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo '?')")
    [ -z "${PYTHON:-}" ] || break # an explicit choice is not second-guessed
  done
  echo "error: visionops needs Python 3.11, 3.12 or 3.13 (found: ${found[*]:-no python3 on PATH})." \
    "Install one (apt-get install python3.11, pyenv install 3.12 or uv python install 3.12) and rerun," \
    "or point PYTHON at it: PYTHON=/path/to/python3.12 ./run.sh setup" >&2
  exit 1
}

choose() { # sets $tf and $with from the flags, VISIONOPS_GPU and the last choice, and keeps them for next time
  tf="" with=""
  [ -f "$CHOICE" ] && . "$CHOICE"
  case "${VISIONOPS_GPU:-}" in 1) tf=gpu ;; 0) tf=cpu ;; esac
  local arg
  while [ $# -gt 0 ]; do
    arg=$1
    shift
    case "$arg" in
      --gpu) tf=gpu ;;
      --cpu) tf=cpu ;;
      --with) with=${1:?--with needs a list: docker,kubernetes} && shift ;;
      --with=*) with=${arg#--with=} ;;
      *) echo "error: setup: unknown option $arg (use --cpu, --gpu, --with docker,kubernetes)" >&2 && exit 2 ;;
    esac
  done
  for arg in ${with//,/ }; do
    case "$arg" in docker | kubernetes) ;; *)
      echo "error: setup --with: unknown extra '$arg' (choose from docker, kubernetes)" >&2 && exit 2 ;;
    esac
  done
  mkdir -p "$(dirname "$CHOICE")"
  printf 'tf=%s\nwith=%s\n' "${tf:=cpu}" "$with" >"$CHOICE"
}

PLOTS_TEMPLATE=.venv/share/visionops/dvc-plots.html
plots_template() { # `dvc plots show/diff` draw offline: Vega inlined from the locked vl-convert-python, not a CDN
  [ -f "$PLOTS_TEMPLATE" ] && grep -qs html_template .dvc/config.local && return
  .venv/bin/visionops plots-template "$PLOTS_TEMPLATE" >&2
}

setup() {
  choose "$@"
  local args=(--frozen --extra "$tf") extra python
  for extra in ${with//,/ }; do args+=(--extra "$extra"); done
  if [ ! -x .tools/bin/uv ]; then
    python=$(find_python)
    echo "==> installing uv $UV_VERSION into .tools/" >&2
    "$python" -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  fi
  export PATH="$PWD/.venv/bin:$PATH" # for the commands DVC stages and tests start
  # A healthy .venv is reused as it is: no --python (uv would rebuild it when the path differs, e.g. a shim),
  # and a no-op check first (byte-compiling every file on each call would cost seconds).
  if [ -x .venv/bin/python ] && supported .venv/bin/python; then
    .tools/bin/uv sync "${args[@]}" --check >/dev/null 2>&1 && plots_template && return
  else
    python=$(find_python)
    args+=(--python "$python")
  fi
  echo "==> syncing .venv with uv.lock (TensorFlow: $tf${with:+; extras: $with})" >&2
  # Byte-compiled: this machine sets PYTHONDONTWRITEBYTECODE, and `import tensorflow` would take ~15 s, not ~6 s.
  .tools/bin/uv sync --quiet --compile-bytecode "${args[@]}"
  plots_template
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0 # sourced (by tests): the functions only

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup "$@" ;;
  pipeline) setup && .venv/bin/visionops pull-data --if-absent && exec .venv/bin/dvc repro "$@" ;;
  test) # the whole default suite also measures coverage, with the floor of pyproject.toml; a subset does not
    setup
    [ $# -gt 0 ] || set -- --cov --cov-report=term
    exec .venv/bin/python -m pytest "$@" ;;
  up | status | down | logs | deploy) setup && exec .venv/bin/visionops stack "$cmd" "$@" ;;
  prefect) setup && exec .venv/bin/visionops stack prefect "$@" ;;
  sweep) setup && exec .venv/bin/visionops stack exec .venv/bin/python flows/sweep.py "$@" ;;
  ui) setup && exec .venv/bin/visionops ui "$@" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2 && exit 2 ;;
esac
