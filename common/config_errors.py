"""Clear errors for configuration files: one message naming the file, the field and what is allowed.

A validator that checks several fields names the one at fault by starting its message with
``@field.path: `` (relative to the model it validates).

Used for recipes, vessel files and site files alike, so every bad input reads the same way::

    examples/recipes/bad.toml: phases[1].o2_pct: got 120; allowed: a number <= 100
"""

from __future__ import annotations

import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A configuration file is invalid. ``str()`` is the whole message for the operator."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}" if field else f"{source}: {problem}")


class ConfigErrorList(ConfigError):  # noqa: N818 - a ConfigError holding several
    """Several problems in one file, reported together in one message."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.source, first.field, first.problem)
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return str(self.args[0])


M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('phases', 1, 'o2_pct')`` -> ``'phases[1].o2_pct'``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _submodel(cls: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """Follow ``loc`` through nested model fields (lists, dicts, optionals) to a model class."""
    current: Any = cls
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _unwrap(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The model class inside ``list[X]``, ``X | None``, ``dict[str, X]``, if any."""
    origin = get_origin(annotation)
    if origin in (list, tuple, dict, typing.Union, types.UnionType):
        for arg in get_args(annotation):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
        return None
    return annotation


def _describe(err: Any, cls: type[BaseModel]) -> tuple[str, str]:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        parent = _submodel(cls, loc[:-1])
        allowed = ", ".join(sorted(parent.model_fields)) if parent else "see the docs"
        return field_path(loc), f"unknown key; allowed keys: {allowed}"
    if kind == "missing":
        return field_path(loc), "required but missing"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    path = field_path(loc)
    if msg.startswith("@") and ": " in msg:  # a cross-field check naming its own field
        inner, msg = msg[1:].split(": ", 1)
        path = f"{path}.{inner}" if path else inner
    if kind in ("float_parsing", "float_type", "int_parsing", "int_type") and isinstance(got, str):
        msg += " (units go in the field name, e.g. o2_pct = 2.0, duration_h = 48)"
    if isinstance(got, dict | list):  # a whole table failed a cross-check: the message says why
        return path, msg
    return path, f"got {got!r}; allowed: {msg[0].lower()}{msg[1:]}"


def from_validation_error(source: str, exc: ValidationError, cls: type[BaseModel]) -> ConfigError:
    """Turn a pydantic error into one :class:`ConfigError` (several problems joined)."""
    errors = [ConfigError(source, *_describe(e, cls)) for e in exc.errors()]
    return errors[0] if len(errors) == 1 else ConfigErrorList(errors)


def load_toml_model(path: Path, cls: type[M]) -> M:
    """Read and validate a TOML file into ``cls``, raising :class:`ConfigError` on any problem."""
    source = str(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return validate_model(source, data, cls)


def validate_model(source: str, data: dict[str, Any], cls: type[M]) -> M:
    """Validate already-parsed ``data`` into ``cls``, raising :class:`ConfigError`."""
    try:
        return cls.model_validate(data, context={"source": source})
    except ValidationError as exc:
        raise from_validation_error(source, exc, cls) from None
