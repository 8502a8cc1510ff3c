#!/usr/bin/env bash
# Re-take the README's screenshots of the MLflow and Prefect UIs with Debian's headless Chromium
# (apt-get install chromium, driven by docs/screenshot.py), against the running local stack (`./run.sh up`). Needs what the README's journeys
# leave behind: two runs in experiment visionops-sample (e.g. `./run.sh pipeline`, then
# `dvc exp run -S train.finetune.epochs=12`) and a deployment run (`./run.sh prefect deployment run ...`).
# Usage: docs/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/visionops stack status >/dev/null || { echo "start the stack first: ./run.sh up" >&2; exit 1; }
# The URLs a user is given: the stack's landing page (`./run.sh status`), then the pages of the runs and of the
# registered model as the commands and the Prefect summaries link them (visionops.tracking.links).
read -r prefect runs compare artifacts model flow_run < <(.venv/bin/python - <<'PY'
import json, subprocess, urllib.parse, urllib.request
from visionops.tracking import links
status = json.loads(subprocess.run([".venv/bin/visionops", "stack", "status", "--json"], capture_output=True, check=True).stdout)
def call(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())
ui, api = status["mlflow"], status["mlflow"] + "/api/2.0/mlflow"
exp = call(f"{api}/experiments/get-by-name?experiment_name=visionops-sample")["experiment"]["experiment_id"]
found = call(f"{api}/runs/search", {"experiment_ids": [exp], "max_results": 2, "order_by": ["start_time DESC"]})["runs"]
r1, r2 = found[-1]["info"]["run_id"], found[0]["info"]["run_id"]
# MLflow's Compare button opens this page (the project prints no link to it).
compare = f"{ui}/#/compare-runs?" + urllib.parse.urlencode({"runs": json.dumps([r1, r2]), "experiments": json.dumps([exp])})
flows = call(f"{status['prefect']}/api/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
# The older run's artifacts: the pipeline's full training, not the short deployment run after it.
shown = links.run_url(ui, exp, r1, tab="artifacts/evaluation/confusion_matrix.png")
print(status["prefect"], status["mlflow_ui"], f"{compare}&{links.VIEW}", shown, links.model_url(ui, "visionops-sample-classifier"), flows[0]["id"])
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
# The printed URL as a first visit shows it, then each MLflow page after the one click the README asks for: closing
# the assistant panel.
shot first-visit.png "$runs" 1600,900
close='document.querySelector("[data-component-id=\"mlflow.assistant.chat_panel.close\"]")?.click()'
shot experiment-runs.png "$runs" 1900,1000 "$close"
shot compare-runs.png "$compare" 1900,1600 "$close"
shot run-artifacts.png "$artifacts" 1900,1100 "$close"
shot registered-model.png "$model" 1900,1300 "$close"
tab='[...document.querySelectorAll("button,a,[role=tab],li,div")].filter(e => e.textContent.trim() === "Artifacts").pop()?.click()'
shot prefect-flow-run.png "$prefect/runs/flow-run/$flow_run" 1900,1200 "$tab"
shot prefect-summary.png "$prefect/artifacts/artifact/$artifact" 1500,1000
echo "docs/img/: first-visit, experiment-runs, compare-runs, run-artifacts, registered-model, prefect-flow-run, prefect-summary"
