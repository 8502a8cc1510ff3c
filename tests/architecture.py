"""The package's import graph and dvc.yaml's stages, read from a project's files: what the architecture tests check,
and what a test adding a stage to a copy of the project (tests/e2e/test_dvc_pipeline.py) computes its deps with."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

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
# What is logged to MLflow does not change a stage's outputs (`visionops log-run` re-logs a run), so the modules that
# only log are no stage's deps; promote keeps them, as its decision reads the run's tags. Package __init__ files hold
# a docstring only (test below), so they change nothing either; the top __init__ sets the offline switches.
LOGGING_ONLY = {"tracking.connection", "tracking.lineage", "tracking.runs", "tracking.record", "tracking.sweeps"}
KEEPS_LOGGING = {"stages.promote"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``src/visionops/stages/train.py`` → ``stages.train``; a package's ``__init__.py`` → its folder's name."""
    rel = path.relative_to(package).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def layer(module: str, package: Path = PACKAGE) -> tuple[int, str]:
    """The (rank, name) of ``module`` from its folder (a folder without a layer raises KeyError)."""
    folder = module.split(".")[0] if (package / module.split(".")[0]).is_dir() else ""
    return FOLDERS[folder]


def _target(module: str, name: str | None, package: Path = PACKAGE) -> str:
    """The package module ``from visionops.<module> import <name>`` reaches: a submodule when ``name`` is one."""
    base = module.replace(".", "/")
    if name and (package / base / f"{name}.py").is_file():
        return f"{module}.{name}" if module else name
    if name and not module and (package / name).is_dir():
        return name
    return module or "__init__"


@functools.cache
def imports(package: Path = PACKAGE) -> dict[str, dict[str, set[str]]]:
    """module → {"top": package modules imported at module level, "lazy": those imported inside functions}."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(package.rglob("*.py")):
        entry = found.setdefault(module_name(path, package), {"top": set(), "lazy": set()})
        for node in ast.walk(ast.parse(path.read_text())):
            targets: set[str] = set()
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "visionops":
                module = node.module.partition(".")[2]
                targets = {_target(module, a.name, package) for a in node.names}
            elif isinstance(node, ast.Import):
                targets = {a.name.partition(".")[2] or "__init__" for a in node.names if a.name.startswith("visionops")}
            targets.discard(module_name(path, package))
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


def dvc_stages(root: Path = REPO) -> dict[str, dict]:
    """dvc.yaml's stages, in order: the one list of stages."""
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    """The package module a dvc.yaml stage's command runs: ``visionops <command> …`` → ``stages.<command>``."""
    words = stage["cmd"].split()
    assert words[0] == "visionops", stage["cmd"]
    return f"stages.{words[1].replace('-', '_')}"


def code_deps(stage_name: str, graph: dict[str, dict[str, set[str]]], root: Path = REPO) -> set[str]:
    """The files under src/ that dvc.yaml stage ``stage_name`` of the project at ``root`` must list: its module's
    import closure (``graph``: :func:`imports` of that project's package)."""
    module = stage_module(dvc_stages(root)[stage_name])
    wanted = closure(module, graph) - {"__init__"}
    if module not in KEEPS_LOGGING:
        wanted -= LOGGING_ONLY
    paths = set()
    for m in wanted:
        path = root / "src" / "visionops" / (m.replace(".", "/") + ".py")
        if path.is_file():  # (a folder's __init__ holds a docstring only: test_package_inits_hold_only_a_docstring)
            paths.add(f"src/visionops/{m.replace('.', '/')}.py")
    return paths
