#!/usr/bin/env bash
# Re-take the README's screenshots of the MLflow and Prefect UIs with Debian's headless Chromium
# (apt-get install chromium), against the running local stack (`./run.sh up`). Needs what the README's journeys
# leave behind: two runs in experiment visionops-sample (e.g. `./run.sh pipeline`, then
# `dvc exp run -S train.finetune.epochs=12`) and a deployment run (`./run.sh prefect deployment run ...`).
# Usage: docs/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/visionops stack status >/dev/null || { echo "start the stack first: ./run.sh up" >&2; exit 1; }
# Ids from the servers' APIs: the experiment, its two latest runs, the latest flow run.
read -r mlflow prefect exp r1 r2 flow_run < <(.venv/bin/python - <<'PY'
import json, urllib.request
from visionops import stack
s = stack.load()
def call(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())
api = f"{s.mlflow_url}/api/2.0/mlflow"
exp = call(f"{api}/experiments/get-by-name?experiment_name=visionops-sample")["experiment"]["experiment_id"]
runs = call(f"{api}/runs/search", {"experiment_ids": [exp], "max_results": 2, "order_by": ["start_time DESC"]})["runs"]
flows = call(f"{s.prefect_url}/api/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
print(s.mlflow_url, s.prefect_url, exp, runs[-1]["info"]["run_id"], runs[0]["info"]["run_id"], flows[0]["id"])
PY
)
shot() { # file, URL, window size
  chromium --headless=new --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --hide-scrollbars --window-size="$3" --virtual-time-budget=20000 \
    --screenshot="docs/img/$1" "$2" 2>/dev/null
}
shot compare-runs.png "$mlflow/#/compare-runs?runs=%5B%22$r1%22,%22$r2%22%5D&experiments=%5B%22$exp%22%5D" 1900,1600
shot run-artifacts.png "$mlflow/#/experiments/$exp/runs/$r2/artifacts/evaluation/confusion_matrix.png" 1900,1100
shot registered-model.png "$mlflow/#/models/visionops-sample-classifier" 1900,1300
shot experiment-runs.png "$mlflow/#/experiments/$exp" 1900,1100
shot prefect-flow-run.png "$prefect/runs/flow-run/$flow_run?tab=Artifacts" 1900,1300
echo "docs/img/: compare-runs, run-artifacts, registered-model, experiment-runs, prefect-flow-run (runs $r1 $r2)"
