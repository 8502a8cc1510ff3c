"""The package's shape, checked: each rule of docs/architecture.md and CONTRIBUTING.md ("Where things live").

The layers are folders of ``src/visionops/`` (:data:`FOLDERS`), read top-down: the CLI → stages → services (tracking,
stack) → building blocks (training, data) → the floor (the modules at the package's top). A module imports its own
layer or lower ones; a stage never imports another stage (what two stages share moves down); a building block never
imports a service (the ranks say so by themselves). An import inside a function is for speed only (deferring
TensorFlow or MLflow), listed below with its reason, never a way around a cycle. dvc.yaml's code deps of a stage are
its import closure.

Each rule is a function of a project's root that lists what breaks it: the tests at the top apply them to this
repository, and :func:`test_a_copy_that_breaks_the_rule_fails_it` applies each to a copy of the project with one
deliberate break, so no rule here can pass whatever the code does.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from architecture import FOLDERS, closure, code_deps, dvc_stages, imports, layer, module_name
from helpers import REPO

# Imports inside functions (module pattern, target pattern), each with its reason. Anything else fails the test.
LAZY = {
    ("cli.*", "*"): "every command imports its stage when it runs: `visionops -h` must not import TensorFlow",
    ("stages.promote", "training.*"): "TensorFlow only when a champion must be re-scored on a new split",
    ("tracking.serving", "training.model"): "the served model loads Keras when MLflow loads it, not at import",
    ("tracking.record", "__init__"): "the package's folder, shipped with the logged model (code_paths)",
}
MAX_LINES = 350
MUTATORS = ("setdefault", "update", "pop", "popitem", "clear", "__setitem__", "__delitem__")
REGISTRY_CALLS = re.compile(
    r"\.(set_registered_model_alias|delete_registered_model_alias|create_model_version|"
    r"register_model|get_model_version_by_alias|search_model_versions|transition_model_version_stage)\("
)


def _package(root: Path) -> Path:
    return root / "src" / "visionops"


def _modules(root: Path) -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text()) for path in sorted(_package(root).rglob("*.py"))}


def unlayered_folders(root: Path) -> list[str]:
    """Folders of the package that have no layer."""
    folders = {p.name for p in _package(root).iterdir() if p.is_dir() and p.name != "__pycache__"}
    return sorted(folders - set(FOLDERS))


def upward_imports(root: Path) -> list[str]:
    """Imports that go up a layer, and stages importing stages."""
    package, broken = _package(root), []
    for module, found in imports(package).items():
        rank, name = layer(module, package)
        for target in found["top"] | found["lazy"]:
            their_rank, their_name = layer(target, package)
            if their_rank > rank or (name == their_name == "stage"):
                broken.append(f"{module} ({name}) imports {target} ({their_name})")
    return broken


def cycles(root: Path) -> list[str]:
    """Pairs of modules that reach each other through imports."""
    graph = imports(_package(root))
    return [
        f"cycle: {module} ↔ {target}"
        for module in graph
        for target in graph[module]["top"] | graph[module]["lazy"]
        if module != target and module in closure(target, graph)
    ]


def unlisted_lazy_imports(root: Path) -> list[str]:
    """Package imports inside functions that :data:`LAZY` does not list."""
    return [
        f"{module} imports {target} inside a function"
        for module, found in imports(_package(root)).items()
        for target in found["lazy"] - found["top"]
        if not any(fnmatch.fnmatch(module, m) and fnmatch.fnmatch(target, t) for m, t in LAZY)
    ]


def deps_drift(root: Path) -> list[str]:
    """dvc.yaml stages whose code deps are not their module's import closure."""
    graph, drift = imports(_package(root)), []
    for stage, spec in dvc_stages(root).items():
        wanted = code_deps(stage, graph, root)
        listed = {d for d in spec["deps"] if d.startswith("src/")}
        if listed != wanted:
            missing, extra = sorted(wanted - listed), sorted(listed - wanted)
            drift.append(f"dvc.yaml stage {stage}: missing {missing}, not imported {extra}")
    return drift


def busy_inits(root: Path) -> list[str]:
    """Folder __init__ files holding more than a docstring that says what the layer holds."""
    found = []
    for path in _package(root).glob("*/__init__.py"):
        if path.parent.name == "cli":
            continue  # (the CLI's __init__ is its entry point)
        tree = ast.parse(path.read_text())
        only_docstring = len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)
        if not only_docstring or len(ast.get_docstring(tree) or "") <= 40:
            found.append(f"{path.parent.name}/__init__.py")
    return found


def long_modules(root: Path) -> list[str]:
    """Modules over :data:`MAX_LINES` lines."""
    package = _package(root)
    return [
        f"{p.relative_to(package)}: {n} lines"
        for p in sorted(package.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]


def wide_interfaces(root: Path) -> list[str]:
    """Public functions and methods taking more than three positional arguments (the CLI's typer commands exempt)."""
    package, found = _package(root), []
    for path, tree in _modules(root).items():
        if path.parent.name == "cli":
            continue
        scopes = [tree.body] + [c.body for c in tree.body if isinstance(c, ast.ClassDef)]
        for node in (n for body in scopes for n in body):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
                names = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                if len(names) > 3:
                    found.append(f"{path.relative_to(package)}: {node.name}({', '.join(names)})")
    return found


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def environ_changed_on_import(root: Path) -> list[str]:
    """Module-level statements (run on import) that change os.environ, outside the package's own __init__."""
    package, found = _package(root), []
    for path, tree in _modules(root).items():
        if path == package / "__init__.py":
            continue
        for statement in tree.body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            for node in ast.walk(statement):
                call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else []
                if (call and node.func.attr in MUTATORS and _is_environ(node.func.value)) or any(
                    isinstance(t, ast.Subscript) and _is_environ(t.value) for t in targets
                ):
                    found.append(f"{path.relative_to(package)}:{node.lineno}")
    return found


def services_outside_their_module(root: Path) -> list[str]:
    """MLflow imported outside tracking/, Prefect imported anywhere, versions or aliases moved outside the registry."""
    package, found = _package(root), []
    for path, tree in _modules(root).items():
        module = module_name(path, package)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if any(n.split(".")[0] == "mlflow" for n in names) and not module.startswith("tracking"):
                found.append(f"{module} imports MLflow")
            if any(n.split(".")[0] == "prefect" for n in names):
                found.append(f"{module} imports Prefect")
        if REGISTRY_CALLS.search(path.read_text()) and module != "tracking.registry":
            found.append(f"{module} moves registry versions or aliases")
    return found


def handed_files(root: Path = REPO) -> set[str]:
    """The file names one dvc.yaml stage writes and another reads: the stages' contracts."""
    stages = dvc_stages(root)
    written = {
        out if isinstance(out, str) else next(iter(out))
        for s in stages.values()
        for kind in ("outs", "metrics", "plots")
        for out in s.get(kind, [])
    }
    read = {d for s in stages.values() for d in s.get("deps", [])}
    return {Path(p).name for p in written & read}


def handed_files_named_outside_contracts(root: Path) -> list[str]:
    """String constants spelling a handed file's name outside visionops.contracts (package and flows).

    (A name in an f-string or a docstring is not a constant and passes: the rule is about the code that opens files.)
    """
    names, spelled = handed_files(root), []
    for path in [*_package(root).rglob("*.py"), *(root / "flows").glob("*.py")]:
        if path.parent == _package(root) / "contracts":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                spelled.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    return spelled


def references_outside_the_repository(root: Path) -> list[str]:
    """Paths the code, the tests or pyproject.toml point a reader at that the project does not hold."""
    pattern = re.compile(r"(?<![\w/.-])((?:\.\./)+[\w./-]+\.md|(?:docs|tests|benchmarks|deploy|docker)/[\w./-]+\.\w+)")
    missing = []
    for path in [*_package(root).rglob("*.py"), root / "pyproject.toml", *(root / "tests").rglob("*.py")]:
        for ref in pattern.findall(path.read_text()):
            if ref.startswith("../") or not (root / ref).exists():
                missing.append(f"{path.relative_to(root)}: {ref}")
    return missing


def stale_lock_entries(root: Path) -> list[str]:
    """Code deps and params sections whose md5 or value dvc.lock records differently from the files now."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    stale = []
    for stage, record in lock.items():
        for dep in record["deps"]:
            path = root / dep["path"]
            code = path.is_file() and dep["path"].startswith(("src/", "flows/"))
            if code and hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
                stale.append(f"{stage}: {dep['path']}")
        for section, recorded in record.get("params", {}).get("params.yaml", {}).items():
            if params.get(section) != recorded:
                stale.append(f"{stage}: params.yaml `{section}`")
    return stale


def test_every_folder_is_a_layer() -> None:
    assert unlayered_folders(REPO) == [], "a new folder needs a layer in FOLDERS and in docs/architecture.md"


def test_imports_go_down_the_layers() -> None:
    assert upward_imports(REPO) == [], "imports go down the layers; a stage never imports another stage"


def test_no_import_cycle() -> None:
    assert cycles(REPO) == []


def test_imports_in_functions_are_listed_with_their_reason() -> None:
    assert unlisted_lazy_imports(REPO) == [], "move the import to the top of the file, or list it in LAZY with why"


def test_dvc_deps_of_each_stage_are_its_import_closure() -> None:
    assert deps_drift(REPO) == []


def test_package_inits_hold_only_a_docstring() -> None:
    assert busy_inits(REPO) == [], "a folder's __init__ holds its docstring only, saying what the layer holds"


def test_modules_stay_short() -> None:
    assert long_modules(REPO) == [], f"split these by responsibility (at most {MAX_LINES} lines a module)"


def test_interfaces_are_keyword_only_past_three() -> None:
    assert wide_interfaces(REPO) == [], "make the parameters past the third keyword-only (`*,`), or pass one object"


def test_only_the_package_init_changes_the_environment_on_import() -> None:
    assert environ_changed_on_import(REPO) == [], "set environment defaults in visionops/__init__.py only"


def test_only_tracking_talks_to_mlflow_and_nothing_imports_prefect() -> None:
    assert services_outside_their_module(REPO) == [], "MLflow lives in tracking/, aliases in tracking/registry.py"


def test_files_handed_between_stages_are_named_only_in_contracts() -> None:
    assert {"metrics.json", "split.json", "classes.json", "run.json", "model.keras"} <= handed_files()
    assert handed_files_named_outside_contracts(REPO) == [], "read and write it through its type in contracts"


def test_references_to_files_name_files_of_the_repository() -> None:
    assert references_outside_the_repository(REPO) == [], "point at files the repository holds (no private notes)"


def test_the_committed_dvc_lock_records_the_current_code_and_params() -> None:
    """A fresh clone's `dvc repro` after `pull-data` must have nothing to rerun (tests/e2e/test_dvc_pipeline.py).

    That needs dvc.lock to record the md5 of every committed code dep and the params.yaml sections as they are now;
    checked here in milliseconds, so a code change without a pipeline rerun fails before the half-hour e2e tier.
    """
    stale = stale_lock_entries(REPO)
    assert stale == [], f"dvc.lock is stale for {stale}: rerun the pipeline (`./run.sh pipeline`) and commit dvc.lock"


def _append(path: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / path).write_text((root / path).read_text() + text)


def _add_folder(root: Path) -> None:
    (root / "src/visionops/helpers").mkdir()
    (root / "src/visionops/helpers/__init__.py").write_text('"""Helpers of every kind, in no layer at all."""\n')


def _drop_dep(root: Path) -> None:
    dvc = root / "dvc.yaml"
    dvc.write_text(dvc.read_text().replace("      - src/visionops/data/preprocess.py\n", "", 1))


def _change_param(root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["seed"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(params))


ELSEWHERE = "/".join(("..", "notes", "DESIGN.md"))  # (spelled apart: this file itself keeps the rule)

# rule → (what breaks it, the edit, what the rule must then report); each edit is a realistic slip.
BREAKS: list[tuple[Callable[[Path], list[str]], str, Callable[[Path], None], str]] = [
    (unlayered_folders, "a folder without a layer", _add_folder, "helpers"),
    (
        upward_imports,
        "a building block importing a service",
        _append("src/visionops/training/scoring.py", "from visionops.tracking import runs\n"),
        "training.scoring (building block) imports tracking.runs (service)",
    ),
    (
        upward_imports,
        "a stage importing a stage",
        _append("src/visionops/stages/evaluate.py", "from visionops.stages import train\n"),
        "stages.evaluate (stage) imports stages.train (stage)",
    ),
    (
        cycles,
        "two floor modules importing each other",
        _append("src/visionops/errors.py", "from visionops import files\n"),
        "errors",
    ),
    (
        unlisted_lazy_imports,
        "an import hidden in a function",
        _append("src/visionops/training/head.py", "def _late():\n    from visionops.data import sample\n"),
        "training.head imports data.sample inside a function",
    ),
    (deps_drift, "a dep left out of dvc.yaml", _drop_dep, "missing ['src/visionops/data/preprocess.py']"),
    (busy_inits, "code in a folder's __init__", _append("src/visionops/data/__init__.py", "LIMIT = 3\n"), "data/"),
    (
        long_modules,
        "a module past 350 lines",
        _append("src/visionops/training/head.py", "# …\n" * MAX_LINES),
        "training/head.py",
    ),
    (
        wide_interfaces,
        "four positional parameters",
        _append("src/visionops/data/probe.py", "def crop(image, top, left, size):\n    return image\n"),
        "crop(image, top, left, size)",
    ),
    (
        environ_changed_on_import,
        "an environment default set on import",
        _append("src/visionops/training/lite.py", "import os\nos.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')\n"),
        "training/lite.py",
    ),
    (
        services_outside_their_module,
        "MLflow imported by a building block",
        _append("src/visionops/training/scoring.py", "import mlflow\n"),
        "training.scoring imports MLflow",
    ),
    (
        services_outside_their_module,
        "an alias moved by a stage",
        _append("src/visionops/stages/promote.py", "def _x(c):\n    c.set_registered_model_alias('m', 'a', '1')\n"),
        "stages.promote moves registry versions or aliases",
    ),
    (
        handed_files_named_outside_contracts,
        "a stage file read raw",
        _append("src/visionops/stages/promote.py", "def _raw(d):\n    return (d / 'metrics.json').read_text()\n"),
        "'metrics.json'",
    ),
    (
        references_outside_the_repository,
        "a pointer at a private note",
        _append("src/visionops/config.py", f"# see {ELSEWHERE}\n"),
        ELSEWHERE,
    ),
    (
        stale_lock_entries,
        "code changed without a pipeline rerun",
        _append("src/visionops/stages/train.py", "\n"),
        "train: src/visionops/stages/train.py",
    ),
    (stale_lock_entries, "a param changed without a rerun", _change_param, "train: params.yaml `train`"),
]


@pytest.mark.parametrize(("rule", "what", "edit", "reported"), BREAKS, ids=[b[1] for b in BREAKS])
def test_a_copy_that_breaks_the_rule_fails_it(
    rule: Callable[[Path], list[str]], what: str, edit: Callable[[Path], None], reported: str, tmp_path: Path
) -> None:
    for name in ("src", "flows", "tests", "docs", "benchmarks", "deploy", "docker"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    assert rule(tmp_path) == [], "the untouched copy keeps the rule"
    edit(tmp_path)
    imports.cache_clear()  # (the graph of the untouched copy)
    found = rule(tmp_path)
    assert any(reported in line for line in found), f"{rule.__name__} missed {what}: {found}"
