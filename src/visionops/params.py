"""Reading params.yaml into :class:`visionops.config.Params`, and writing the defaults as params.yaml.

:func:`load_params` refuses a key given twice, an unknown key (with a "did you mean"), and a value out of range, each
named in the message. :func:`render` writes :class:`~visionops.config.Params`' defaults as the commented params.yaml a
user reads: the committed file is its output (``visionops params --defaults > params.yaml``), so every default and its
comment have one source.
"""

from __future__ import annotations

import difflib
import re
import textwrap
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from visionops.config import ConfigError, Params


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Keys allowed at the parent of ``loc`` (used to suggest a fix for an unknown key)."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return [f.alias or n for n, f in model.model_fields.items()]


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(item["loc"])
            hint = _did_you_mean(str(item["loc"][-1]), allowed)
            lines.append(f"  - {key}: unknown key.{hint} Allowed here: {', '.join(allowed)}.")
        else:
            hint = ""
            if item["type"] == "literal_error" and isinstance(item.get("input"), str):
                hint = _did_you_mean(item["input"], re.findall(r"'([^']*)'", item["ctx"]["expected"]))
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}: {message} (got {item.get('input')!r}).{hint}")
    lines.append(f"Fix the key(s) above in {source}; its comments list the allowed values.")
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping.

    Raises:
        ConfigError: a key is unknown, a value has the wrong type or is out of range; every problem is listed.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections (validate:, split:, ...), got {type(raw).__name__}"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or fails validation.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found. Run from the project root, or pass --params PATH.") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}\nFix the file at the line shown.") from None
    return parse_params(raw, source=str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: plain YAML keeps the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice in the same section; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


HEADER = """\
# Every stage's parameters, a section each; dvc.yaml lists the sections each stage reads (`runtime`: none of them).
# Generated from src/visionops/config.py (`visionops params --defaults`): change a default there; try another value
# with `dvc exp run -S key=value`. Unknown keys and out-of-range values stop the run with an error naming the key.
"""
COLUMN = 32  # where the comments start
WIDTH = 120


def _scalar(value: Any) -> str:
    """A value as YAML writes it inline (flow style for lists and mappings)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _commented(line: str, comment: str | None) -> list[str]:
    """``line`` with ``comment`` from :data:`COLUMN` on, wrapped onto comment lines at that column."""
    if not comment:
        return [line]
    start = max(COLUMN, len(line) + 1)
    wrapped = textwrap.wrap(comment, WIDTH - start - 2) or [""]
    return [f"{line.ljust(start)}# {wrapped[0]}", *(f"{' ' * start}# {rest}" for rest in wrapped[1:])]


def _comment_lines(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, WIDTH - 2)]


def _section(model: BaseModel, indent: int) -> list[str]:
    lines = []
    pad = " " * indent
    for name, field in type(model).model_fields.items():
        key, value = field.alias or name, getattr(model, name)
        if isinstance(value, BaseModel):
            doc = (type(value).__doc__ or "").strip().split("\n")[0]
            lines += _commented(f"{pad}{key}:", doc)
            lines += _section(value, indent + 2)
        else:
            plain = list(value) if isinstance(value, tuple) else value
            lines += _commented(f"{pad}{key}: {_scalar(plain)}", field.description)
    return lines


def render(params: Params | None = None) -> str:
    """``params`` (default: :class:`Params`' defaults) as params.yaml, each key commented with its description."""
    params = params or Params()
    lines = [HEADER.rstrip()]
    for name, field in Params.model_fields.items():
        key, value = field.alias or name, getattr(params, name)
        lines.append("")
        if isinstance(value, BaseModel):
            lines += [*_comment_lines((type(value).__doc__ or "").strip().split("\n")[0]), f"{key}:"]
            lines += _section(value, 2)
        else:  # the augment list
            lines += [*_comment_lines(field.description or ""), f"{key}:"]
            lines += [f"  - {_scalar(step.model_dump())}" for step in value]
    return "\n".join(lines) + "\n"
