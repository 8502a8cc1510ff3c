"""The package's shape, checked: each rule of docs/architecture.md and CONTRIBUTING.md ("Where things live").

The layers are folders of ``src/visionops/`` (:data:`FOLDERS`), read top-down: the CLI → stages → services (tracking,
stack) → building blocks (training, data) → the floor (the modules at the package's top). A module imports its own
layer or lower ones; a stage never imports another stage (what two stages share moves down); a building block never
imports a service (the ranks say so by themselves). An import inside a function is for speed only (deferring
TensorFlow or MLflow), listed below with its reason, never a way around a cycle. dvc.yaml's code deps of a stage are
its import closure. Each test here fails on a copy of the package that breaks its rule (CONTRIBUTING.md shows how
each was seen failing).
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import re
from pathlib import Path

import pytest
import yaml
from helpers import REPO

PACKAGE = REPO / "src" / "visionops"
FOLDERS = {  # folder → (layer rank: higher imports lower, its name); "" is the package's top: the floor
    "cli": (4, "cli"),
    "stages": (3, "stage"),
    "tracking": (2, "service"),
    "stack": (2, "service"),
    "training": (1, "building block"),
    "data": (1, "building block"),
    "contracts": (0, "floor"),
    "": (0, "floor"),
}
# Imports inside functions (module pattern, target pattern), each with its reason. Anything else fails the test.
LAZY = {
    ("cli.*", "*"): "every command imports its stage when it runs: `visionops -h` must not import TensorFlow",
    ("stages.promote", "training.*"): "TensorFlow only when a champion must be re-scored on a new split",
    ("tracking.serving", "training.model"): "the served model loads Keras when MLflow loads it, not at import",
    ("tracking.record", "__init__"): "the package's folder, shipped with the logged model (code_paths)",
}
# What is logged to MLflow does not change a stage's outputs (`visionops log-run` re-logs a run), so the modules that
# only log are no stage's deps; promote keeps them, as its decision reads the run's tags. Package __init__ files hold
# a docstring only (test below), so they change nothing either; the top __init__ sets the offline switches.
LOGGING_ONLY = {"tracking.connection", "tracking.lineage", "tracking.runs", "tracking.record", "tracking.sweeps"}
KEEPS_LOGGING = {"stages.promote"}
MAX_LINES = 350


def module_name(path: Path) -> str:
    """``src/visionops/stages/train.py`` → ``stages.train``; a package's ``__init__.py`` → its folder's name."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def layer(module: str) -> tuple[int, str]:
    """The (rank, name) of ``module`` from its folder."""
    folder = module.split(".")[0] if (PACKAGE / module.split(".")[0]).is_dir() else ""
    return FOLDERS[folder]


def _target(module: str, name: str | None) -> str:
    """The package module ``from visionops.<module> import <name>`` reaches: a submodule when ``name`` is one."""
    base = module.replace(".", "/")
    if name and (PACKAGE / base / f"{name}.py").is_file():
        return f"{module}.{name}" if module else name
    if name and not module and (PACKAGE / name).is_dir():
        return name
    return module or "__init__"


@functools.cache
def imports(package: Path = PACKAGE) -> dict[str, dict[str, set[str]]]:
    """module → {"top": package modules imported at module level, "lazy": those imported inside functions}."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(package.rglob("*.py")):
        entry = found.setdefault(module_name(path), {"top": set(), "lazy": set()})
        for node in ast.walk(ast.parse(path.read_text())):
            targets: set[str] = set()
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "visionops":
                module = node.module.partition(".")[2]
                targets = {_target(module, a.name) for a in node.names}
            elif isinstance(node, ast.Import):
                targets = {a.name.partition(".")[2] or "__init__" for a in node.names if a.name.startswith("visionops")}
            targets.discard(module_name(path))
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


def layer_violations(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """Imports that go up a layer, and stages importing stages."""
    broken = []
    for module, found in graph.items():
        rank, name = layer(module)
        for target in found["top"] | found["lazy"]:
            their_rank, their_name = layer(target)
            if their_rank > rank or (name == their_name == "stage"):
                broken.append(f"{module} ({name}) imports {target} ({their_name})")
    return broken


def test_every_folder_is_a_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(FOLDERS) - {""}, "a new folder needs a layer in FOLDERS and in docs/architecture.md"


def test_imports_go_down_the_layers() -> None:
    assert layer_violations(imports()) == [], "imports go down the layers; a stage never imports another stage"


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
        if not any(fnmatch.fnmatch(module, m) and fnmatch.fnmatch(target, t) for m, t in LAZY)
    ]
    assert unlisted == [], "move the import to the top of the file, or list it in LAZY with the reason"


def dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages, in order: the one list of stages."""
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    """The package module a dvc.yaml stage's command runs: ``visionops <command> …`` → ``stages.<command>``."""
    words = stage["cmd"].split()
    assert words[0] == "visionops", stage["cmd"]
    return f"stages.{words[1].replace('-', '_')}"


def code_deps(stage_name: str, graph: dict[str, dict[str, set[str]]]) -> set[str]:
    """The files under src/ that dvc.yaml stage ``stage_name`` must list: its module's import closure."""
    module = stage_module(dvc_stages()[stage_name])
    wanted = closure(module, graph) - {"__init__"}
    if module not in KEEPS_LOGGING:
        wanted -= LOGGING_ONLY
    paths = set()
    for m in wanted:
        path = PACKAGE / (m.replace(".", "/") + ".py")
        if path.is_file():  # (a folder's __init__ holds a docstring only: test_package_inits_hold_only_a_docstring)
            paths.add(f"src/visionops/{m.replace('.', '/')}.py")
    return paths


@pytest.mark.parametrize("stage", list(dvc_stages()))
def test_dvc_deps_of_a_stage_are_its_import_closure(stage: str) -> None:
    wanted = code_deps(stage, imports())
    listed = {d for d in dvc_stages()[stage]["deps"] if d.startswith("src/")}
    assert listed == wanted, (
        f"dvc.yaml stage {stage}: missing {sorted(wanted - listed)}, not imported {sorted(listed - wanted)}"
    )


def test_package_inits_hold_only_a_docstring() -> None:
    for path in PACKAGE.glob("*/__init__.py"):
        if path.parent.name == "cli":
            continue  # (the CLI's __init__ is its entry point)
        body = ast.parse(path.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{path}: a folder's __init__ holds its docstring only"
        assert len(ast.get_docstring(ast.parse(path.read_text())) or "") > 40, f"{path}: say what the layer holds"


def test_modules_stay_short() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by responsibility (at most {MAX_LINES} lines a module)"


MUTATORS = ("setdefault", "update", "pop", "popitem", "clear", "__setitem__", "__delitem__")


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def environ_writes(tree: ast.Module) -> list[int]:
    """Lines of module-level statements (run on import) that change os.environ."""
    found = []
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for node in ast.walk(statement):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if call and node.func.attr in MUTATORS and _is_environ(node.func.value):
                found.append(node.lineno)
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else []
            if any(isinstance(t, ast.Subscript) and _is_environ(t.value) for t in targets):
                found.append(node.lineno)
    return found


def test_only_the_package_init_changes_the_environment_on_import() -> None:
    changing = {
        str(p.relative_to(PACKAGE)): lines
        for p in PACKAGE.rglob("*.py")
        if (lines := environ_writes(ast.parse(p.read_text())))
    }
    assert set(changing) <= {"__init__.py"}, f"set environment defaults in visionops/__init__.py only: {changing}"


def test_only_tracking_talks_to_mlflow_and_nothing_imports_prefect() -> None:
    mlflow, prefect, registry_calls = [], [], []
    calls = re.compile(
        r"\.(set_registered_model_alias|delete_registered_model_alias|create_model_version|"
        r"register_model|get_model_version_by_alias|search_model_versions|transition_model_version_stage)\("
    )
    for path in PACKAGE.rglob("*.py"):
        module, text = module_name(path), path.read_text()
        for node in ast.walk(ast.parse(text)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "mlflow" for n in names) and not module.startswith("tracking"):
                mlflow.append(module)
            if any(n.split(".")[0] == "prefect" for n in names):
                prefect.append(module)
        if calls.search(text) and module != "tracking.registry":
            registry_calls.append(module)
    assert (mlflow, prefect, registry_calls) == ([], [], []), "MLflow lives in tracking/, aliases in its registry"


def handed_files() -> set[str]:
    """The file names one dvc.yaml stage writes and another reads: the stages' contracts."""
    stages = dvc_stages()
    written = {
        out if isinstance(out, str) else next(iter(out))
        for s in stages.values()
        for kind in ("outs", "metrics", "plots")
        for out in s.get(kind, [])
    }
    read = {d for s in stages.values() for d in s.get("deps", [])}
    return {Path(p).name for p in written & read}


def test_files_handed_between_stages_are_named_only_in_contracts() -> None:
    """Only visionops.contracts spells a handed file's name: everyone else reads and writes it through its type.

    (A name in an f-string or a docstring is not a constant and passes: the rule is about the code that opens files.)
    """
    names = handed_files()
    assert {"metrics.json", "split.json", "classes.json", "run.json", "model.keras"} <= names
    spelled = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "flows").glob("*.py")]:
        if path.parent == PACKAGE / "contracts":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                spelled.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert spelled == [], "read and write it through its type in visionops.contracts"


def test_references_to_files_name_files_of_the_repository() -> None:
    """A path the code or its configuration points a reader at exists in the repository (no private design notes)."""
    pattern = re.compile(r"(?<![\w/.-])((?:\.\./)+[\w./-]+\.md|(?:docs|tests|benchmarks|deploy|docker)/[\w./-]+\.\w+)")
    missing = []
    for path in [*PACKAGE.rglob("*.py"), REPO / "pyproject.toml", *(REPO / "tests").rglob("*.py")]:
        for ref in pattern.findall(path.read_text()):
            if ref.startswith("../") or not (REPO / ref).exists():
                missing.append(f"{path.relative_to(REPO)}: {ref}")
    assert missing == []


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
