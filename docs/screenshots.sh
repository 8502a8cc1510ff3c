#!/usr/bin/env bash
# Re-take the README's screenshots of the MLflow and Prefect UIs with Debian's headless Chromium
# (apt-get install chromium, driven by docs/screenshot.py), against the running local stack (`./run.sh up`). Needs what the README's journeys
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
read -r artifact < <(.venv/bin/python - "$prefect" "$flow_run" <<'PY'
import json, sys, urllib.request
body = json.dumps({"artifacts": {"flow_run_id": {"any_": [sys.argv[2]]}}}).encode()
req = urllib.request.Request(f"{sys.argv[1]}/api/artifacts/filter", data=body, headers={"Content-Type": "application/json"})
print(json.loads(urllib.request.urlopen(req, timeout=30).read())[0]["id"])
PY
)
shot() { .venv/bin/python docs/screenshot.py "$2" "docs/img/$1" --size "$3" ${4:+--js "$4"}; }
# The MLflow UI opens the model-training view with ?workflowType=machine_learning; its assistant panel opens on a
# first visit and is closed before the capture.
close='document.querySelector("[data-component-id=\"mlflow.assistant.chat_panel.close\"]")?.click()'
ml="workflowType=machine_learning"
shot experiment-runs.png "$mlflow/#/experiments/$exp?$ml" 1900,1000 "$close"
shot compare-runs.png "$mlflow/#/compare-runs?runs=%5B%22$r1%22,%22$r2%22%5D&experiments=%5B%22$exp%22%5D&$ml" 1900,1600 "$close"
# The artifacts of the older run: the pipeline's full training, not the short deployment run after it.
shot run-artifacts.png "$mlflow/#/experiments/$exp/runs/$r1/artifacts/evaluation/confusion_matrix.png?$ml" 1900,1100 "$close"
shot registered-model.png "$mlflow/#/models/visionops-sample-classifier?$ml" 1900,1300 "$close"
tab='[...document.querySelectorAll("button,a,[role=tab],li,div")].filter(e => e.textContent.trim() === "Artifacts").pop()?.click()'
shot prefect-flow-run.png "$prefect/runs/flow-run/$flow_run" 1900,1200 "$tab"
shot prefect-summary.png "$prefect/artifacts/artifact/$artifact" 1500,1000
echo "docs/img/: experiment-runs, compare-runs, run-artifacts, registered-model, prefect-flow-run, prefect-summary"
