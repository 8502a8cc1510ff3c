"""The pipeline as Prefect deployments: a real `prefect server` and process worker on 127.0.0.1, prefect.yaml.

The origin repository is a copy of this checkout with a tiny generated dataset pushed to a DVC remote outside
it, so each flow run does what it does on a remote worker: clone, pull the data and run cache, run the stages.
Where PostgreSQL is installed, the same runs go through the team stack (Prefect and MLflow on PostgreSQL, MLflow
artifacts and the DVC remote in S3), configured by environment variables and `dvc remote` only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml
from helpers import REPO, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _assert_in_team_stores(team: dict, flow_run_id: str, mlflow_run_id: str) -> None:
    """The flow run is a row in Prefect's PostgreSQL database; the MLflow run in MLflow's; the files in S3."""
    pg, s3, bucket = team["postgres"], team["s3"], team["bucket"]
    assert pg.query("prefect", "SELECT state_type::text FROM flow_run WHERE id = %s::uuid", (flow_run_id,)) == [
        ("COMPLETED",)
    ]
    assert pg.query("mlflow_pipeline", "SELECT status FROM runs WHERE run_uuid = %s", (mlflow_run_id,)) == [
        ("FINISHED",)
    ]
    keys = s3.keys(bucket)
    assert any(k.startswith("mlflow/") and f"/{mlflow_run_id}/artifacts/evaluation/" in k for k in keys), keys
    assert any(k.startswith("dvc/runs/") for k in keys), "the flow pushed DVC's run cache to the S3 remote"


def test_prefect_yaml_declares_the_three_work_pools_and_a_valid_schedule() -> None:
    from prefect.client.schemas.schedules import construct_schedule

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    steps = [next(iter(s)) for s in config["pull"]]
    assert steps == ["prefect.deployments.steps.git_clone", "prefect.deployments.steps.set_working_directory"]
    assert "{{ prefect.variables.visionops_repo }}" in json.dumps(config["pull"]), "the worker clones, from a URL"
    assert str(REPO) not in (REPO / "prefect.yaml").read_text(), "no path into the deploying machine's folders"
    training = [d for d in config["deployments"] if d["entrypoint"] == "flows/training_pipeline.py:training_pipeline"]
    sweeps = [d for d in config["deployments"] if d["entrypoint"] == "flows/sweep.py:sweep_flow"]
    assert len(training) + len(sweeps) == len(config["deployments"]) and [d["name"] for d in sweeps] == ["local"]
    assert sweeps[0]["work_pool"]["name"] == "visionops-control", "a sweep never holds a training worker"
    pools = {d["name"]: d["work_pool"] for d in training}
    assert pools["local"]["name"] == "visionops-process"
    requests = pools["gpu-docker"]["job_variables"]["container_create_kwargs"]["device_requests"]
    assert requests[0]["capabilities"] == [["gpu"]]
    template = json.loads((REPO / "deploy/k8s-gpu-job-template.json").read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert "gpus" in template["variables"]["properties"]
    for deployment in config["deployments"]:
        for schedule in deployment.get("schedules", []):
            parsed = construct_schedule(cron=schedule["cron"], timezone=schedule["timezone"])
            assert parsed.cron == "0 3 * * 1"
    assert "tensorflow[and-cuda]" in (REPO / "pyproject.toml").read_text()
    assert "ARG EXTRA=gpu" in (REPO / "Dockerfile").read_text(), "`docker build .` makes the GPU image"


def test_docker_deployments_build_and_push_the_image_they_run() -> None:
    """The build/push steps of prefect.yaml call prefect-docker's real step functions with arguments they accept."""
    import inspect

    steps = pytest.importorskip("prefect_docker.deployments.steps", reason="./run.sh setup --with docker")
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    images = {}
    for deployment in (d for d in config["deployments"] if d["name"] != "local" and "process" not in d["name"]):
        for step in (deployment["build"] or []) + (deployment["push"] or []):
            (name, kwargs), *_ = step.items()
            function = getattr(steps, name.rpartition(".")[2])
            inspect.signature(function).bind(**{k: v for k, v in kwargs.items() if k != "id"})
        build = deployment["build"][0]["prefect_docker.deployments.steps.build_docker_image"]
        images[deployment["name"]] = (build["tag"], build["buildargs"]["EXTRA"], bool(deployment["push"]))
        assert build["buildargs"]["BASE_IMAGE"] == "{{ $VISIONOPS_BASE_IMAGE }}", "docker/build-images.sh's base"
        assert deployment["work_pool"]["job_variables"]["image"] == "{{ build-image.image }}", deployment["name"]
    # GPU images go through a registry; the CPU twin's image stays on the engine that built it.
    gpu = ("gpu", "gpu", True)
    assert images == {
        "gpu-docker": gpu,
        "cpu-docker": ("cpu", "cpu", False),
        "gpu-kubernetes": gpu,
        "gpu-kubernetes-multiworker": gpu,
    }


def test_cpu_docker_is_gpu_docker_without_the_device_request() -> None:
    deployments = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    gpu, cpu = (deployments[name]["work_pool"]["job_variables"] for name in ("gpu-docker", "cpu-docker"))
    assert gpu.pop("container_create_kwargs")["device_requests"][0]["driver"] == "nvidia"
    assert (gpu.pop("image_pull_policy"), cpu.pop("image_pull_policy")) == ("IfNotPresent", "Never")
    assert gpu == cpu, "the rest of the job template is the same"
    assert deployments["cpu-docker"]["work_pool"]["name"] == "visionops-cpu-docker"


def test_deployment_runs_then_a_rerun_retrains_nothing(prefect_pipeline) -> None:
    stack = prefect_pipeline
    first = stack.trigger()
    assert stack.wait(first) == "COMPLETED", stack.logs(first)[-5000:]
    logs = stack.logs(first)
    assert "Running stage 'train'" in logs and "Running stage 'promote'" in logs
    versions = stack.mlflow.search_model_versions("name = 'visionops-sample-classifier'")
    assert len(versions) == 1 and versions[0].tags["decision"] == "promoted"
    runs = stack.mlflow.search_runs(
        experiment_ids=[stack.mlflow.get_experiment_by_name("visionops-sample").experiment_id]
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    if stack.team:
        _assert_in_team_stores(stack.team, first, runs[0].info.run_id)

    second = stack.trigger()
    assert stack.wait(second) == "COMPLETED", stack.logs(second)[-5000:]
    logs = stack.logs(second)
    assert "Running stage" not in logs, "a fresh clone restores every stage from DVC's run cache"
    assert len(stack.mlflow.search_model_versions("name = 'visionops-sample-classifier'")) == 1


def test_validation_failure_fails_the_flow_run_with_the_reason(prefect_pipeline) -> None:
    stack = prefect_pipeline
    flow_run = stack.trigger({"overrides": ["validate.min_images_per_class=500"]})
    assert stack.wait(flow_run) == "FAILED"
    assert "validate.min_images_per_class" in stack.logs(flow_run)


@pytest.mark.faults
def test_killed_worker_then_restarted_lets_a_rerun_complete(prefect_pipeline) -> None:
    stack = prefect_pipeline
    overrides = {"overrides": ["train.seed=7", "train.finetune.epochs=0"]}  # (the head alone: a shorter training)
    flow_run = stack.trigger(overrides)
    deadline = time.monotonic() + 300
    while "Running stage 'train'" not in stack.logs(flow_run) and time.monotonic() < deadline:
        time.sleep(1)
    stack.kill_worker()  # the worker and the flow run's process with it
    stack.start_worker()
    rerun = stack.trigger(overrides)
    assert stack.wait(rerun) == "COMPLETED", stack.logs(rerun)[-5000:]
    assert "Running stage 'train'" in stack.logs(rerun), "the killed run never finished training"
    exps = run(["dvc", "exp", "list", "--all-commits", "--name-only"], cwd=stack.origin).stdout
    assert exps.strip(), "the overridden run was pushed to the origin as a DVC experiment"


@pytest.mark.faults
def test_servers_restarted_mid_train_the_run_completes_whole(prefect_pipeline) -> None:
    """While a flow run trains (a sweep's trials are runs of this deployment), its MLflow server is restarted
    (SIGTERM, 5 s down, same port and store), then the Prefect server (the same), and on the team stack PostgreSQL
    under both (fast shutdown, 3 s down). The flow run's process belongs to the worker, Prefect's client retries a
    lost connection once it had one, and the flow's log-run step logs what the MLflow outage kept out of the run:
    the run completes, and its MLflow run is FINISHED with every epoch once and the model registered."""
    from visionops.tracking.record import LOGGED_TRAINING, MODEL_URI_TAG

    stack, name = prefect_pipeline, "name = 'visionops-sample-classifier'"
    versions = len(stack.mlflow.search_model_versions(name))

    def runs(status: str = "") -> list:
        ids = [e.experiment_id for e in stack.mlflow.search_experiments()]
        return stack.mlflow.search_runs(ids, f"attributes.status = '{status}'" if status else "")

    earlier = {r.info.run_id for r in runs()}  # (a killed run stays RUNNING)
    flow_run = stack.trigger({"overrides": ["train.seed=11", "train.finetune.epochs=3"]})  # 1 + 3 epochs
    deadline, training = time.monotonic() + 600, []
    while not training and time.monotonic() < deadline:  # the training's run has logged an epoch
        new = [r for r in runs("RUNNING") if r.info.run_id not in earlier]
        training = [r for r in new if stack.mlflow.get_metric_history(r.info.run_id, "loss")]
        time.sleep(1)
    assert training, stack.logs(flow_run)[-5000:]
    run_id = training[0].info.run_id

    started = time.monotonic()
    stack.tracking.stop()
    time.sleep(5)
    stack.tracking.start()
    stack.restart_server(down_s=5)
    if stack.team:
        stack.team["postgres"].restart(down_s=3)
    restarts = time.monotonic() - started
    assert "Running stage 'evaluate'" not in stack.logs(flow_run), "the restarts landed during train"
    state = stack.wait(flow_run, timeout=900)
    logs = stack.logs(flow_run)
    print(
        f"servers restarted within {restarts:.0f} s of an epoch logged; flow run {state}; log-run said: "
        f"{[line for line in logs.splitlines() if line.startswith('log-run')]}"
    )
    assert state == "COMPLETED", logs[-5000:]
    assert "Running stage 'promote'" in logs, "the flow run's logs reach the restarted server"

    finished = stack.mlflow.get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert [m.step for m in stack.mlflow.get_metric_history(run_id, "loss")] == [0, 1, 2, 3], "every epoch once"
    assert finished.data.tags[LOGGED_TRAINING] == "true" and MODEL_URI_TAG in finished.data.tags
    newest = stack.mlflow.search_model_versions(name)
    assert len(newest) == versions + 1 and run_id in {v.run_id for v in newest}


@pytest.mark.faults
def test_tracking_server_restarted_while_a_sweeps_trials_log(prefect_pipeline) -> None:
    """`flows/sweep.py` (what `./run.sh sweep` runs) with two trials on the one worker; the MLflow server is
    restarted (SIGTERM, 5 s down, same port and store) once the first trial's run has logged an epoch. Each trial's
    log-run step logs what the outage kept out: both trials complete with whole runs (every epoch once, the model),
    children of the sweep's parent run, and the sweep promotes once, the best trial."""
    from visionops.tracking.record import LOGGED_TRAINING
    from visionops.tracking.sweeps import SWEEP_TAG, TRIAL_TAG, sweep_children

    stack, name = prefect_pipeline, "name = 'visionops-sample-classifier'"
    versions = {v.version for v in stack.mlflow.search_model_versions(name)}
    sweep = subprocess.Popen(
        [sys.executable, "flows/sweep.py", "-S", "train.seed=21,22", "--concurrency", "1"],
        cwd=stack.origin,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, training = time.monotonic() + 600, []
        while not training and time.monotonic() < deadline and sweep.poll() is None:
            trials = [
                r
                for e in stack.mlflow.search_experiments()
                for r in stack.mlflow.search_runs([e.experiment_id], "attributes.status = 'RUNNING'")
                if TRIAL_TAG in r.data.tags
            ]
            training = [r for r in trials if stack.mlflow.get_metric_history(r.info.run_id, "loss")]
            time.sleep(1)
        assert training, "no trial logged an epoch"
        stack.tracking.stop()
        time.sleep(5)
        stack.tracking.start()
        output, _ = sweep.communicate(timeout=1200)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, output[-5000:]
    result = json.loads(output.strip().splitlines()[-1])

    parent = stack.mlflow.search_runs(
        [training[0].info.experiment_id],
        f"tags.`{SWEEP_TAG}` = '{result['sweep']}' and tags.`visionops.sweep.role` = 'parent'",
    )[0]
    children = sweep_children(stack.mlflow, parent.info.run_id)
    assert sorted(children) == [1, 2], children
    assert training[0].info.run_id in {r.info.run_id for r in children.values()}, "the restart hit a trial's run"
    for trial, child in children.items():
        assert child.info.status == "FINISHED", (trial, child.info.status)
        assert [m.step for m in stack.mlflow.get_metric_history(child.info.run_id, "loss")] == [0, 1], trial
        assert child.data.tags[LOGGED_TRAINING] == "true", trial
    added = [v for v in stack.mlflow.search_model_versions(name) if v.version not in versions]
    best = result["best"]["run_id"]
    assert best in {r.info.run_id for r in children.values()} and [v.run_id for v in added] == [best], (added, result)
