#!/usr/bin/env bash
# Re-take the README's picture of a sweep's trials compared in the MLflow UI (docs/img/sweep-compare.png), with
# Debian's headless Chromium (docs/screenshot.py), against the local stack of the project in the current folder
# after a sweep ran there (`./run.sh up --workers 2`, `./run.sh deploy`, `./run.sh sweep ...`; or
# `python benchmarks/sweep_workers.py --workdir DIR --keep`, then run this in DIR/w2/project).
# Usage: bash /path/to/checkout/docs/sweep-screenshot.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="$here/.venv/bin/python"
"$here/.venv/bin/visionops" stack status >/dev/null || { echo "start the stack first: ./run.sh up" >&2; exit 1; }
# The latest sweep's parent run and its children, from the MLflow API.
read -r mlflow exp runs < <("$py" - <<'PY'
import json, urllib.parse, urllib.request
from visionops import stack
s = stack.load()
def call(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())
api = f"{s.mlflow_url}/api/2.0/mlflow"
exp = json.loads(urllib.request.urlopen(f"{api}/experiments/get-by-name?experiment_name=visionops-sample").read())
exp = exp["experiment"]["experiment_id"]
search = {"experiment_ids": [exp], "order_by": ["start_time DESC"], "max_results": 1,
          "filter": "tags.`visionops.sweep.role` = 'parent'"}
parent = call(f"{api}/runs/search", search)["runs"][0]["info"]["run_id"]
children = call(f"{api}/runs/search", {"experiment_ids": [exp], "filter": f"tags.mlflow.parentRunId = '{parent}'"})
ids = [r["info"]["run_id"] for r in children["runs"]]
print(s.mlflow_url, exp, urllib.parse.quote(json.dumps(ids, separators=(",", ":"))))
PY
)
close='document.querySelector("[data-component-id=\"mlflow.assistant.chat_panel.close\"]")?.click()'
url="$mlflow/#/compare-runs?runs=$runs&experiments=%5B%22$exp%22%5D&workflowType=machine_learning"
"$py" "$here/docs/screenshot.py" "$url" "$here/docs/img/sweep-compare.png" --size 1900,1600 --js "$close"
echo "$here/docs/img/sweep-compare.png"
