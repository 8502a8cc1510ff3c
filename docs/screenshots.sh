#!/usr/bin/env bash
# Re-take the README's MLflow UI screenshots with Debian's headless Chromium (apt-get install chromium) against
# the project's own store. Needs two runs in experiment visionops-sample (e.g. `./run.sh pipeline` and
# `dvc exp run -S train.finetune.epochs=12`). Usage: docs/screenshots.sh RUN_ID_1 RUN_ID_2 [EXPERIMENT_ID]
set -euo pipefail
cd "$(dirname "$0")/.."
r1=$1 r2=$2 exp=${3:-1} port=5055
.venv/bin/visionops ui --port "$port" >/dev/null 2>&1 &
ui=$!
trap 'kill $ui' EXIT
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 1; done
base="http://127.0.0.1:$port/#"
shot() {
  chromium --headless=new --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --hide-scrollbars --window-size="$3" --virtual-time-budget=20000 \
    --screenshot="docs/img/$1" "$2" 2>/dev/null
}
shot compare-runs.png "$base/compare-runs?runs=%5B%22$r1%22,%22$r2%22%5D&experiments=%5B%22$exp%22%5D" 1900,1600
shot run-artifacts.png "$base/experiments/$exp/runs/$r1/artifacts/evaluation/confusion_matrix.png" 1900,1100
shot registered-model.png "$base/models/visionops-sample-classifier" 1900,1300
