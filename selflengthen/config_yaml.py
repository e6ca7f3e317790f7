"""YAML files and `key.sub=value` overrides into pydantic models, with errors that name the file,
the line and the field (and suggest the key that was probably meant)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from selflengthen.errors import ConfigError


class StrictModel(BaseModel):
    """A config section: unknown keys are errors (a typo must not pass silently), and so are bad
    values assigned after loading."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def read_yaml_mapping(path: Path) -> tuple[dict[str, Any], str]:
    """(the mapping at the top of the YAML file, its text); an empty file is an empty mapping."""
    file = str(path)
    if not path.is_file():
        raise ConfigError("config file not found", file=file)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (bad byte at offset {exc.start})", file=file) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}invalid YAML: {problem}", file=file) from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"the top level must be a mapping of keys, got {type(loaded).__name__}", file=file)
    return loaded, text


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _submodel(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The pydantic model that holds the field at `loc` (for did-you-mean suggestions)."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if (
            field is None
            or not isinstance(field.annotation, type)
            or not issubclass(field.annotation, BaseModel)
        ):
            return current
        current = field.annotation
    return current


def yaml_line_of(text: str, loc: tuple) -> int | None:
    """1-based line of the key at `loc` in YAML `text`, or None (e.g. the key came from an override)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key, value in node.value:
            if key.value == str(part):
                line, node = key.start_mark.line + 1, value
                break
        else:
            return None  # not in the file (an override put it there): naming its section's line would mislead
    return line


def explain_validation_error(
    err: ValidationError,
    model: type[BaseModel],
    file: str | None,
    text: str = "",
    overridden: Sequence[str] = (),
) -> ConfigError:
    """Turn pydantic's report into one clear line per problem, with a did-you-mean for unknown keys.
    A problem in a value set by an override (`overridden`: its dotted keys) is named as `--set KEY`,
    not by a line of the file."""
    lines = []
    first_field = None
    in_file = False
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        first_field = first_field or dotted
        override = next((k for k in overridden if dotted == k or dotted.startswith(k + ".")), None)
        line_no = yaml_line_of(text, loc) if text and override is None else None
        at = f"--set {override}: " if override else f"line {line_no}: " if line_no else ""
        in_file = in_file or override is None
        if not loc and e.get("type") == "value_error":  # a check across sections: its message says it all
            lines.append(f"{at}{str(e.get('msg')).removeprefix('Value error, ')}")
        elif e.get("type") == "extra_forbidden":
            owner = _submodel(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), _field_names(owner), n=1)
            hint = f" (did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?)" if close else ""
            lines.append(f"{at}unknown key '{dotted}'{hint}")
        else:
            value = e.get("input")
            shown = repr(value) if not isinstance(value, dict) else "{...}"
            lines.append(f"{at}field '{dotted}' = {shown[:80]}: {e.get('msg')}")
    message = "; ".join(lines)
    error = ConfigError(message, file=file if in_file else None)
    error.field = first_field
    return error


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Apply an override like `extend.micro_iterations=2` to nested dicts."""
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{p}' is not a section", field=dotted)
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: Sequence[str]) -> None:
    """Apply `key.sub=value` overrides (values parsed as YAML) to nested config data in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value", field=item)
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        set_dotted(data, key.strip(), value)
