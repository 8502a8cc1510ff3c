"""The package's shape, checked: imports form a tree read top-down, and dvc.yaml's code deps are import closures.

Layers, top to bottom (DESIGN.md §2): the CLI → stages → building blocks → services → foundation. A module
imports its own layer or lower ones; a stage never imports another stage (what two stages share moves down);
a building block never imports a service. An import inside a function is for speed only (deferring TensorFlow or
MLflow), listed below with its reason, never a way around a cycle.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

import pytest
import yaml
from helpers import REPO

PACKAGE = REPO / "src" / "visionops"
LAYERS = {  # module → (layer rank: higher imports lower, its name)
    **dict.fromkeys(("cli",), (4, "cli")),
    **dict.fromkeys(("validate", "split", "train", "evaluate", "promote", "predict", "export", "sweep"), (3, "stage")),
    **dict.fromkeys(
        (
            "augment",
            "cache",
            "dataset",
            "distribute",
            "dvccache",
            "embeddings",
            "expectations",
            "fitting",
            "gallery",
            "head",
            "lite",
            "model",
            "modelcard",
            "plots",
            "preprocess",
            "probe",
            "sample",
            "scoring",
            "serving",
            "torch_checkpoint",
            "weights",
        ),
        (2, "building block"),
    ),
    **dict.fromkeys(("tracking", "registry", "remotes", "stack"), (1, "service")),
    **dict.fromkeys(("__init__", "errors", "files", "config", "contracts", "processes", "progress"), (0, "foundation")),
}
# Imports inside functions, each with its reason. Anything else in a function body fails the test.
LAZY = {
    ("cli", "*"): "every command imports its stage when it runs: `visionops -h` must not import TensorFlow",
    ("promote", "model"): "TensorFlow only when a champion must be re-scored on a new split",
    ("promote", "scoring"): "TensorFlow only when a champion must be re-scored on a new split",
    ("serving", "model"): "the served model loads Keras when MLflow loads it, not when the package is imported",
    ("tracking", "__init__"): "the package's folder, shipped with the logged model (code_paths)",
}
# dvc.yaml: the module each stage's command runs, and services left out of its deps on purpose.
STAGE_MODULES = {
    "validate": "validate",
    "split": "split",
    "train": "train",
    "evaluate": "evaluate",
    "promote": "promote",
}
NOT_DEPS = {
    "tracking": "what is logged to MLflow does not change a stage's outputs; `visionops log-run` re-logs a run",
    "__init__": "sets offline switches (analytics, log levels) before third-party imports; no output depends on it",
}
ALWAYS_DEPS = {"promote": {"tracking"}}  # promote's decision reads the run's tags through tracking


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0] if rel.parts[0] == "cli" else rel.name


@functools.cache
def imports() -> dict[str, dict[str, set[str]]]:
    """module → {"top": package modules imported at module level, "lazy": those imported inside functions}."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        entry = found.setdefault(module, {"top": set(), "lazy": set()})
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets: set[str] = set()
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "visionops":
                parts = node.module.split(".")
                targets = {parts[1]} if len(parts) > 1 else {a.name for a in node.names if a.name != "__version__"}
                if len(parts) == 1 and any(a.name == "__version__" for a in node.names):
                    targets.add("__init__")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "visionops":
                        targets.add(parts[1] if len(parts) > 1 else "__init__")
            targets.discard(module)
            if targets:
                entry["top" if node.col_offset == 0 else "lazy"].update(targets)
    return found


def closure(module: str, graph: dict[str, dict[str, set[str]]]) -> set[str]:
    """``module`` and every package module it imports, directly or not, at module level or in functions."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += sorted(graph[current]["top"] | graph[current]["lazy"])
    return seen


def test_every_module_has_a_layer() -> None:
    assert set(imports()) == set(LAYERS), "add a new module to LAYERS (and to DESIGN.md's picture)"


def test_imports_go_down_the_layers() -> None:
    broken = []
    for module, found in imports().items():
        rank, layer = LAYERS[module]
        for target in found["top"] | found["lazy"]:
            their_rank, their_layer = LAYERS[target]
            if their_rank > rank or (layer == "stage" and their_layer == "stage"):
                broken.append(f"{module} ({layer}) imports {target} ({their_layer})")
    assert broken == [], "imports must go down the layers; a stage never imports another stage"


def test_no_import_cycle() -> None:
    graph = imports()
    for module in graph:
        for target in graph[module]["top"] | graph[module]["lazy"]:
            assert module not in closure(target, graph) or module == target, f"cycle: {module} ↔ {target}"


def test_imports_in_functions_are_listed_with_their_reason() -> None:
    unlisted = [
        f"{module} imports {target} inside a function"
        for module, found in imports().items()
        for target in found["lazy"] - found["top"]
        if (module, target) not in LAZY and (module, "*") not in LAZY
    ]
    assert unlisted == [], "move the import to the top of the file, or list it in LAZY with the reason"


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_dvc_deps_of_a_stage_are_its_import_closure(stage: str) -> None:
    graph = imports()
    wanted = closure(STAGE_MODULES[stage], graph) - set(NOT_DEPS) | ALWAYS_DEPS.get(stage, set())
    wanted_paths = {f"src/visionops/{m}.py" for m in wanted}
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    listed = {d for d in deps if d.startswith("src/")}
    assert listed == wanted_paths, (
        f"dvc.yaml stage {stage}: missing {sorted(wanted_paths - listed)}, not imported {sorted(listed - wanted_paths)}"
    )


def test_the_committed_dvc_lock_records_the_current_code_and_params() -> None:
    """A fresh clone's `dvc repro` after `pull-data` must have nothing to rerun (tests/e2e/test_dvc_pipeline.py).

    That needs dvc.lock to record the md5 of every committed code dep and the params.yaml sections as they are now;
    checked here in milliseconds, so a code change without a pipeline rerun fails before the half-hour e2e tier.
    """
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stale = []
    for stage, record in lock.items():
        for dep in record["deps"]:
            path = REPO / dep["path"]
            code = path.is_file() and dep["path"].startswith(("src/", "flows/"))
            if code and hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
                stale.append(f"{stage}: {dep['path']}")
        for section, recorded in record.get("params", {}).get("params.yaml", {}).items():
            if params.get(section) != recorded:
                stale.append(f"{stage}: params.yaml `{section}`")
    assert stale == [], (
        f"dvc.lock is stale for {stale}: rerun the pipeline (`./run.sh pipeline`) and commit dvc.lock with the change"
    )
