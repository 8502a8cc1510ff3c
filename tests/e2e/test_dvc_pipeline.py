"""The pipeline as a user runs it: restore the sample from the in-repo DVC remote, `dvc repro`, experiments."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, cli, git_commit, run

from visionops.contracts.results import TestMetrics
from visionops.params import load_params
from visionops.stages.promote import decide
from visionops.training.evidence import Evidence

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = [
    "-S",
    "train.image_size=32",
    "-S",
    "train.head.epochs=1",
    "-S",
    "train.finetune.epochs=1",
    "-S",
    "train.finetune.unfreeze_blocks=1",  # (see helpers.tiny_params)
    "-S",
    "train.batch_size=64",
]
# ROC-AUC is continuous (no ties), and with no margin or floor "the better model is champion" is exact.
RULE = ["-S", "promote.metric=roc_auc_ovr", "-S", "promote.min_delta=0", "-S", "promote.min_metric=0"]


def _stages(project: Path) -> list[str]:
    """dvc.yaml's stages, in order."""
    return list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def _ran(output: str) -> set[str]:
    """The stages whose command `dvc repro` (or `dvc exp run`) ran, by what it prints (a person's view)."""
    return {s for s in _stages(REPO) if f"Running stage '{s}'" in output}


def test_pull_repro_experiment_then_nothing_to_do(project_copy: Path, visionops_ui) -> None:
    assert not (project_copy / "data").exists()
    run(cli("pull-data", "--if-absent"), cwd=project_copy)  # what `./run.sh pipeline` does on a fresh clone
    assert len(list((project_copy / "data").rglob("*.jpg"))) >= 300

    first = run(["dvc", "repro", "split"], cwd=project_copy).stdout
    assert _ran(first) == {"validate", "split"}
    committed = run(["git", "diff", "--name-only"], cwd=project_copy).stdout
    assert committed == "", f"the committed dvc.lock is stale for validate/split: {committed}"

    summary = json.loads((project_copy / "artifacts/validate/summary.json").read_text())
    assert summary["quarantined"] == 0 and len(summary["classes"]) >= 4
    assert (project_copy / "artifacts/validate/data_docs/index.html").is_file()
    split = json.loads((project_copy / "artifacts/split/split.json").read_text())
    total = sum(split["totals"].values())
    assert total == summary["usable"] and 0.15 < split["totals"]["test"] / total < 0.25
    train = pd.read_csv(project_copy / "artifacts/split/train.csv")
    assert (project_copy / "data" / train["path"].iloc[0]).is_file(), "lists hold paths relative to data/"

    # Training params reach train, evaluate and promote only; dvc exp records the change.
    exp = run(["dvc", "exp", "run", *TINY, *RULE], cwd=project_copy).stdout
    assert _ran(exp) == {"train", "evaluate", "promote"}, exp
    metrics = json.loads((project_copy / "artifacts/evaluate/metrics.json").read_text())
    predictions = pd.read_csv(project_copy / "artifacts/evaluate/predictions.csv")
    assert metrics["accuracy"] == pytest.approx((predictions["label"] == predictions["predicted"]).mean())
    assert (
        metrics["examples"] == len(predictions) == split["totals"]["test"]
        and TestMetrics.read(project_copy / "artifacts/evaluate").split_id == split["split_id"]
    )
    for name in ("model.keras", "history.csv", "weights.json", "classes.json", "augment_preview.png"):
        assert (project_copy / "artifacts/train" / name).is_file(), name
    # `dvc metrics show` lists the model's metrics only, in a table that fits a 120-column terminal.
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], cwd=project_copy).stdout)
    files = next(iter(shown.values()))["data"]
    assert list(files) == ["artifacts/evaluate/metrics.json"], files
    assert set(files["artifacts/evaluate/metrics.json"]["data"]) >= {"accuracy", "macro_f1", "ece", "roc_auc_ovr"}
    table = run(["dvc", "metrics", "show"], cwd=project_copy, COLUMNS="200").stdout
    assert "accuracy" in table and max(len(line) for line in table.splitlines()) <= 120, table
    assert json.loads(run(["dvc", "exp", "show", "--json"], cwd=project_copy).stdout)

    again = run(["dvc", "repro"], cwd=project_copy).stdout
    assert _ran(again) == set() and "Data and pipelines are up to date" in again
    assert json.loads(run(["dvc", "status", "--json"], cwd=project_copy).stdout) == {}
    _the_prefect_flow_in_process_reruns_nothing(project_copy)

    # An evaluate-only param reruns evaluate, and promote reports the decision made for that run already.
    only_eval = run(["dvc", "exp", "run", "-S", "evaluate.top_k=3"], cwd=project_copy).stdout
    assert _ran(only_eval) == {"evaluate", "promote"} and "(decided earlier)" in only_eval
    assert "top_3_accuracy" in (project_copy / "artifacts/evaluate/metrics.json").read_text()

    _a_second_run_is_decided_by_the_rule(project_copy)
    _data_with_other_classes_ends_green_and_uncompared(project_copy)

    plots = run(["dvc", "plots", "show", "-o", "plots_out"], cwd=project_copy).stdout
    assert (project_copy / "plots_out" / "index.html").is_file(), plots

    _the_local_mlflow_store_holds_the_run(project_copy, visionops_ui)
    # Last: later `dvc exp run`s would run the new stage with the installed visionops, which lacks its command.
    _a_stage_added_as_contributing_says_runs_in_the_flow_and_dvc(project_copy)


def _flow_in_process(project: Path, home: str, **env: str) -> dict[str, str]:
    """Run the training flow without a server in ``project``; what it says of each stage (ran, restored, up to date)."""
    import sys

    out = run(
        [sys.executable, "flows/training_pipeline.py"],
        cwd=project,
        PREFECT_HOME=str(project.parent / home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        **env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["ran"]


def _the_prefect_flow_in_process_reruns_nothing(project: Path) -> None:
    """The flow without a server, after an unchanged `dvc repro`: every stage up to date, dvc.lock untouched."""

    before = {name: (project / name).read_bytes() for name in ("dvc.lock", "params.yaml")}
    ran = _flow_in_process(project, "ph")
    assert ran == dict.fromkeys(_stages(project), "up to date"), ran
    assert before == {name: (project / name).read_bytes() for name in before}


STAGE_MODULE = '''"""A stage that a test adds as CONTRIBUTING says: the split's images per class, as text."""

from __future__ import annotations

from pathlib import Path

from visionops.contracts.data import SplitInfo
from visionops.files import atomic_write_text


def summarize(split_dir: Path, out_dir: Path) -> str:
    """Write ``out_dir/classes.txt``: a line per class with its train / val / test counts."""
    info = SplitInfo.read(split_dir)
    text = "".join(f"{c} {' '.join(str(info.counts[s][c]) for s in ('train', 'val', 'test'))}\\n" for c in info.classes)
    atomic_write_text(Path(out_dir) / "classes.txt", text)
    return text
'''
STAGE_COMMAND = '''

@app.command(rich_help_panel="Pipeline stages (dvc.yaml runs these)")
@command
def summary(split_dir: SplitOpt = Path("artifacts/split"), out_dir: OutOpt = Path("artifacts/summary")) -> None:
    """The split's images per class, as text."""
    from visionops.stages.summary import summarize

    print(summarize(split_dir, writable(out_dir)), end="")
'''


def _a_stage_added_as_contributing_says_runs_in_the_flow_and_dvc(project: Path) -> None:
    """CONTRIBUTING's "Add a stage", step by step: a module, a command, a dvc.yaml stage with its deps as the
    architecture test computes them. The flow runs it with no change of its own; `dvc repro` then has nothing to do."""

    from architecture import code_deps, imports

    (project / "src/visionops/stages/summary.py").write_text(STAGE_MODULE)  # 1
    cli_file = project / "src/visionops/cli/pipeline.py"  # (step 2, params: this stage has none)
    cli_file.write_text(cli_file.read_text() + STAGE_COMMAND)  # 3
    stages = yaml.safe_load((project / "dvc.yaml").read_text())
    stages["stages"]["summary"] = {
        "cmd": "visionops summary --split artifacts/split --out artifacts/summary",
        "deps": ["artifacts/split/split.json"],
        "outs": ["artifacts/summary/classes.txt"],
        "meta": {"prefect": {"timeout_s": 120}},
    }
    (project / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    deps = sorted(code_deps("summary", imports(project / "src" / "visionops"), root=project))  # 4
    assert "src/visionops/stages/summary.py" in deps and "src/visionops/contracts/data.py" in deps, deps
    stages["stages"]["summary"]["deps"] += deps
    (project / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    git_commit(project, "Add the summary stage")  # 6 (`dvc exp run --temp` copies only what git tracks)

    code = {"PYTHONPATH": str(project / "src")}  # (the copy's code, as a worker runs its clone's)
    ran = _flow_in_process(project, "ph2", **code)
    assert list(ran) == _stages(project) and ran.pop("summary") == "ran", ran
    assert set(ran.values()) == {"up to date"}, ran
    counts = (project / "artifacts/summary/classes.txt").read_text().splitlines()
    split = json.loads((project / "artifacts/split/split.json").read_text())
    assert [line.split()[0] for line in counts] == split["classes"]
    again = run(["dvc", "repro"], cwd=project, **code).stdout
    assert _ran(again) == set() and "Data and pipelines are up to date" in again, again


def _decision(project: Path) -> dict:
    return json.loads((project / "artifacts/promote/decision.json").read_text())


def _a_second_run_is_decided_by_the_rule(project: Path) -> None:
    """A second run with other params (untrained: almost surely worse) gets the next version, is compared with the
    first and decided by the rule. (Racing promotions and `previous_champion`: tests/e2e/test_registry.py.)"""
    from mlflow import MlflowClient

    first = _decision(project)
    assert (first["version"], first["decision"]) == ("1", "promoted")
    # Untrained: the head barely moves from its random start. Run in a throwaway copy (`--temp`, as queued experiments
    # are): its run and version must still land in this checkout's store, not in the copy's.
    untrained = ["-S", "train.finetune.epochs=0", "-S", "train.head.learning_rate=0.000001"]
    run(["dvc", "exp", "run", "--temp", *untrained], cwd=project)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    name = first["registered_model"]
    second = client.get_model_version(name, "2").tags
    score = next(float(v) for k, v in second.items() if k.startswith("score.") and k.endswith(".roc_auc_ovr"))
    assert float(second["decision.champion_score"]) == first["score"] and second["decision.compared_with"] == "1"
    rule = load_params(project / "params.yaml").promote  # (the RULE overrides: roc_auc_ovr, no margin, no floor)
    assert (rule.metric, rule.min_delta, rule.min_metric) == ("roc_auc_ovr", 0, 0), rule
    evidence = Evidence(**{k: v for k, v in json.loads(second["decision.evidence"]).items() if k != "resamples"})
    expected = decide(score, first["score"], rule, pretrained=True, champion_version="1", evidence=evidence).action
    assert second["decision"] == expected, second
    champion = "2" if expected == "promoted" else "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == champion
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    runs = {client.get_model_version(name, v).run_id for v in ("1", "2")}
    assert len(runs) == 2, "one MLflow run per training"
    _the_weights_provenance_reaches_the_run_the_version_and_its_card(client, name)


def _the_weights_provenance_reaches_the_run_the_version_and_its_card(client, name: str) -> None:
    """The committed params start from the packaged ImageNet weights; where they came from is on record."""
    from visionops.training.weights import PACKAGED

    package = PACKAGED["EfficientNetLite2"]
    version = client.get_model_version(name, "1")
    assert version.tags["weights.used"] == "imagenet" and version.tags["weights.sha256"] == package.sha256
    assert version.tags["weights.source"] == f"package {package.package} 0.1.0"
    assert f"from package {package.package} 0.1.0, file sha256 `{package.sha256}`" in version.description
    logged = client.get_run(version.run_id).data.tags
    assert logged["weights.package_version"] == "0.1.0" and logged["weights.licence"].startswith("Apache-2.0")
    assert logged["mlflow.note.content"].startswith(f"Fine-tuned from imagenet weights (package {package.package}")


def _data_with_other_classes_ends_green_and_uncompared(project: Path) -> None:
    """The issue's first run on a user's own data (other classes, params unchanged): every stage runs, promote
    keeps the model as challenger without comparing it, and `dvc repro` ends green (it crashed re-scoring)."""
    import shutil

    classes = sorted(p.name for p in (project / "data").iterdir() if p.is_dir())
    shutil.rmtree(project / "data" / classes[-1])  # the new dataset: one class fewer
    run(["dvc", "add", "-q", "data"], cwd=project)
    head_only = ["-S", "train.finetune.epochs=0"]  # (what is checked happens around training: no stage 2 needed)
    done = run(["dvc", "exp", "run", *TINY, *RULE, *head_only], cwd=project)
    assert _ran(done.stdout) == {"validate", "split", "train", "evaluate", "promote"} and "Traceback" not in done.stderr
    decision = _decision(project)
    assert (decision["version"], decision["decision"]) == ("3", "incomparable"), decision
    assert decision["champion_score"] is None and not list((project / "artifacts/promote").glob("champion_v*"))
    ours, theirs = ", ".join(classes[:-1]), ", ".join(classes)
    assert f"classes differ: this model has [{ours}] (3), champion v" in decision["reason"]
    assert f"has [{theirs}] (4)" in decision["reason"] and "promote.registered_model=" in decision["reason"]


def _the_local_mlflow_store_holds_the_run(project: Path, visionops_ui) -> None:
    """Without MLFLOW_TRACKING_URI the runs go to the project's sqlite store, and `visionops ui` serves them."""
    import urllib.request

    assert (project / "mlflow.db").is_file() and (project / "mlartifacts").is_dir()
    run_id = json.loads((project / "artifacts/train/run.json").read_text())["run_id"]
    url = f"{visionops_ui(project).url}/api/2.0/mlflow/runs/get?run_id={run_id}"
    with urllib.request.urlopen(url, timeout=30) as response:
        logged = json.loads(response.read())["run"]
    assert logged["info"]["status"] == "FINISHED"
    assert {m["key"] for m in logged["data"]["metrics"]} >= {"loss", "val_accuracy", "test_accuracy"}
    # MLflow's own columns ("Source", "User", the commit) are filled, as its fluent API would fill them.
    tags = {t["key"]: t["value"] for t in logged["data"]["tags"]}
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("dvc.yaml:train", "LOCAL"), tags
    assert tags["mlflow.user"] == getpass.getuser()
    commit = tags["mlflow.source.git.commit"]
    assert run(["git", "cat-file", "-t", commit], cwd=project).stdout.strip() == "commit", commit


def test_invalid_params_fail_the_stage_with_the_key(project_copy: Path) -> None:
    run(cli("pull-data"), cwd=project_copy)
    params = project_copy / "params.yaml"
    params.write_text(params.read_text().replace("min_side:", "min_sidee:"))
    proc = run(["dvc", "repro"], cwd=project_copy, check=False)
    assert proc.returncode != 0
    assert "validate.min_sidee: unknown key. Did you mean 'min_side'?" in proc.stderr + proc.stdout
