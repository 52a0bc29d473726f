"""Loads experiment configs from YAML with dotted command-line overrides.

`load_config(path, ["data.batch_size=8"])` reads the file with `yaml.safe_load`, applies each
override (values parsed as YAML scalars or lists), validates the result, and turns every
validation error into a `ConfigError` that names the file, line, key and value.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml
from pydantic import BaseModel, ValidationError

from depthkd import atomic
from depthkd.config.schema import ExperimentConfig, model_reference
from depthkd.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
_OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(.*)$", re.S)


@overload
def load_config(path: Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig: ...
@overload
def load_config(path: Path | None, overrides: Sequence[str] = (), *, model: type[M]) -> M: ...
def load_config(
    path: Path | None,
    overrides: Sequence[str] = (),
    model: type[BaseModel] = ExperimentConfig,
) -> BaseModel:
    """Reads, overrides and validates a config.

    Args:
        path: YAML file, or None for the model's defaults.
        overrides: `dotted.key=value` strings applied after the file.
        model: the config model to validate against.

    Raises:
        ConfigError: unreadable YAML, a malformed override, an unknown key or a bad value.
    """
    raw: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        raw, lines = _read_yaml(path)
        _anchor_model_files(raw, model, path.parent)
    overridden: dict[str, str] = {}
    for item in overrides:
        key = _apply_override(raw, item, model)
        overridden[key] = item
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model, path, lines, overridden)) from None


def with_values(cfg: M, values: Mapping[str, Any]) -> M:
    """`cfg` with `{dotted.key: value}` set (a sweep trial's draw), validated again.

    Raises:
        ConfigError: a key does not exist or a value is invalid; the message names the key.
    """
    raw = cfg.model_dump(mode="json")
    overridden = {}
    for key, value in values.items():
        item = f"{key}={value!r}"
        target = raw
        for part in key.split(".")[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{key}: {part} is a value, not a section")
        target[key.split(".")[-1]] = value
        overridden[key] = item
    try:
        return type(cfg).model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, type(cfg), None, {}, overridden)) from None


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML, as pipelines print and record it."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: BaseModel, path: Path) -> None:
    """Atomically writes the resolved config as YAML."""
    atomic.write_text(path, dump_config(cfg))


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None or node is None:  # an empty file: both are None
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    lines: dict[str, int] = {}
    _collect_lines(node, "", lines)
    return data, lines


def _anchor_model_files(raw: dict[str, Any], model: type[BaseModel], folder: Path) -> None:
    """Makes a model file a config file names by a relative path absolute when it lies beside the
    file (`checkpoint: teachers/x.pt`), so a shipped or copied config finds its own files from
    any directory; other relative paths stay relative to the current directory."""
    for name, field in model.model_fields.items():
        value = raw.get(name)
        if isinstance(value, dict):
            for kind in typing.get_args(field.annotation) or (field.annotation,):
                if isinstance(kind, type) and issubclass(kind, BaseModel):
                    _anchor_model_files(value, kind, folder)
        elif isinstance(value, str) and any(
            getattr(m, "func", None) is model_reference for m in field.metadata
        ):
            beside = folder / Path(value).expanduser()
            if "://" not in value and beside.is_file():
                raw[name] = str(beside.resolve())


def _collect_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    """Records the 1-based line of every dotted key in a composed YAML mapping."""
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        out[key] = key_node.start_mark.line + 1
        _collect_lines(value_node, f"{key}.", out)


def _apply_override(raw: dict[str, Any], item: str, model: type[BaseModel]) -> str:
    """Sets one `dotted.key=value` in `raw`; returns the dotted key.

    A key inside a mapping-valued setting (`distill.losses.response_kd=0.2`) changes that entry of
    the mapping: one the file does not set starts from the model's default mapping.
    """
    match = _OVERRIDE.match(item)
    if match is None:
        raise ConfigError(
            f"override {item!r} is not of the form dotted.key=value",
            hint="e.g. data.batch_size=8",
        )
    key, text = match.groups()
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # not YAML: take the string as given
    target = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part not in target:
            target[part] = _default_mapping(model, parts[: i + 1])
        child = target[part]
        if not isinstance(child, dict):
            raise ConfigError(
                f"override {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section"
            )
        target = child
    target[parts[-1]] = value
    return key


def _default_mapping(model: type[BaseModel], loc: list[str]) -> dict[str, Any]:
    """A copy of the default of the dict-valued field at `loc`; {} for sections and the rest."""
    current: Any = model
    for part in loc[:-1]:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return {}
        current = field.annotation
    field = getattr(current, "model_fields", {}).get(loc[-1])
    if field is None or getattr(field.annotation, "__origin__", None) is not dict:
        return {}
    default = field.get_default(call_default_factory=True)
    return dict(default) if isinstance(default, dict) else {}


def _describe(
    exc: ValidationError,
    model: type[BaseModel],
    path: Path | None,
    lines: dict[str, int],
    overridden: dict[str, str],
) -> str:
    messages = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        origin = _origin(key, path, lines, overridden)
        if err["type"] == "extra_forbidden":
            known = _field_names(model, loc[:-1])
            close = difflib.get_close_matches(loc[-1], known, n=1)
            did_you_mean = f" (did you mean {close[0]!r}?)" if close else ""
            messages.append(f"{origin}unknown key {key!r}{did_you_mean}")
        elif not loc:  # a check across sections: its message names the keys
            messages.append(f"{origin}{err['msg'].removeprefix('Value error, ')}")
        else:
            messages.append(f"{origin}{key}: {err['msg']} (got {err.get('input')!r})")
    return "invalid config: " + "; ".join(messages)


def _origin(key: str, path: Path | None, lines: dict[str, int], overridden: dict[str, str]) -> str:
    """Where a key was set: the override that set it, else its file line, else the file."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in overridden:
            return f"override {overridden[prefix]!r}: "
        if prefix in lines and path is not None:
            return f"{path}:{lines[prefix]}: "
    return f"{path}: " if path is not None else ""


def _field_names(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the section at `loc` (for did-you-mean hints)."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def validate_options(model: type[M], options: dict[str, Any]) -> M:
    """Validates command-line options; errors name the option (`--shard-size`) and value."""
    try:
        return model.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        problems = [
            f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']} "
            f"(got {e.get('input')!r})"
            for e in exc.errors()
        ]
        raise ConfigError("invalid options: " + "; ".join(problems)) from None
