"""Table-driven checks of config sections: each section is a frozen dataclass, its fields the keys.

:func:`build_section` turns one TOML table into the dataclass, checking every key against the
field's type hint (bool, int, float, str, Path, ``X | None``, ``tuple[T, ...]``,
``Mapping[str, Dataclass]``) and naming the key and the expected type on any mistake. Adding a
field to a settings dataclass is all it takes for a new key to be read and checked.

:func:`find_secrets` refuses secret-looking keys anywhere in the file: secrets come from the
environment (or a ``*_FILE`` it names), never from the file.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from generation.core.errors import ImagineError

__all__ = ["ConfigError", "Section", "build_section", "describe", "find_secrets", "section_keys"]


class ConfigError(ImagineError):
    """The config file is missing, unreadable or has a bad value; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Section:
    """How one ``[name]`` table maps onto a settings dataclass.

    ``secrets``: fields filled from the environment only (field -> variable name).
    ``subtables``: a nested table whose keys become prefixed fields, e.g. ``[telegram.webhook]
    url`` -> ``webhook_url``. ``hidden``: fields that are not config keys (set by the program).
    ``check``: extra validation after the types are right (raise ValueError).
    """

    cls: type
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    subtables: Mapping[str, str] = dataclasses.field(default_factory=dict)
    hidden: frozenset[str] = frozenset()
    check: Callable[[Any], None] | None = None


_PLACEHOLDER = "0:placeholder-for-config-checks"  # passes the token checks of every front end
_SECRET_WORDS = {"token", "secret", "password", "passwd", "passphrase", "apikey", "credential",
                 "credentials", "key", "privatekey"}


def _looks_secret(key: str) -> bool:
    words = re.split(r"[_\-.\s]+", key.lower())
    return any(word in _SECRET_WORDS for word in words) or key.lower().endswith(("token", "secret"))


def find_secrets(data: Mapping[str, Any], env_names: Mapping[str, str], file_ok: Collection[str] = ()) -> None:
    """Raise ConfigError for the first secret-looking key at any depth of ``data``.

    ``env_names`` maps a dotted key ("discord.token") to the variable to use instead; other
    keys get ``SECTION_KEY`` in capitals. ``file_ok``: variables that may also come as ``*_FILE``.
    """
    def walk(table: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, value in table.items():
            dotted = ".".join((*path, key))
            if isinstance(value, Mapping):
                walk(value, (*path, key))
            elif _looks_secret(str(key)) and not isinstance(value, bool):  # a flag holds no secret
                name = env_names.get(dotted) or re.sub(r"[^A-Z0-9]+", "_", dotted.upper())
                also = f" (or {name}_FILE naming a file that holds it)" if name in file_ok else ""
                raise ConfigError(
                    f"{dotted} looks like a secret, and secrets never go in the config file: remove "
                    f"it and set {name}{also} in the environment instead."
                )

    walk(data, ())


def _config_fields(section: Section) -> list[str]:
    return [f.name for f in dataclasses.fields(section.cls)
            if f.name not in section.secrets and f.name not in section.hidden]


def section_keys(name: str, section: Section) -> list[str]:
    """The dotted config keys of a section, as the file spells them (secrets excluded)."""
    keys = []
    for field_name in _config_fields(section):
        for table, prefix in section.subtables.items():
            if field_name.startswith(prefix):
                keys.append(f"{name}.{table}.{field_name[len(prefix):]}")
                break
        else:
            keys.append(f"{name}.{field_name}")
    return keys


def build_section(
    name: str, section: Section, table: object, *, secrets: Mapping[str, str] | None = None
) -> Any:
    """The dataclass of ``section`` from TOML ``table``; ``secrets`` fill its secret fields.

    Without a value for a secret field a placeholder stands in, so that every other check still
    runs; callers drop the result then.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{name}] must be a table, not {table!r}.")
    flat: dict[str, tuple[str, Any]] = {}  # field -> (dotted key, value)
    for key, value in table.items():
        if key in section.subtables:
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{name}.{key}] must be a table, not {value!r}.")
            for sub, item in value.items():
                flat[section.subtables[key] + sub] = (f"{name}.{key}.{sub}", item)
        else:
            flat[key] = (f"{name}.{key}", value)
    fields_by_key = dict(zip(section_keys(name, section), _config_fields(section)))
    hints = _hints(section.cls)
    kwargs: dict[str, Any] = {}
    for field_name, (dotted, value) in flat.items():
        if fields_by_key.get(dotted) != field_name:
            known = ", ".join(k.split(".", 1)[1] for k in fields_by_key)
            raise ConfigError(f"Unknown key {dotted}; known keys: {known}.")
        kwargs[field_name] = convert(dotted, hints.get(field_name, Any), value)
    required = {f.name for f in dataclasses.fields(section.cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    for field_name in section.secrets:
        value = (secrets or {}).get(field_name)
        if value:
            kwargs[field_name] = value
        elif field_name in required:
            kwargs[field_name] = _PLACEHOLDER
    try:
        built = section.cls(**kwargs)
        if section.check is not None:
            section.check(built)
    except (TypeError, ValueError) as exc:
        message = _strip(str(exc))
        raise ConfigError(message if message.startswith(f"{name}.") else f"[{name}]: {message}") from None
    return built


def _strip(text: str) -> str:
    return text.rstrip(".") + "."


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that names a type-checking-only import
        return {f.name: _from_default(f) for f in dataclasses.fields(cls)}


def _from_default(f: dataclasses.Field[Any]) -> Any:
    default = f.default
    if default is dataclasses.MISSING or default is None:
        return Any
    return type(default)


def describe(hint: Any) -> str:
    """Words for the type a key takes, e.g. "a whole number (int)"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None))
    if hint is bool:
        return "true or false (bool)"
    if hint is int:
        return "a whole number (int)"
    if hint is float:
        return "a number (float)"
    if hint is str:
        return "a string (str)"
    if hint is Path:
        return "a path (a string)"
    if origin is tuple:
        return f"a list of {_plural(args[0]) if args else 'values'}"
    if origin in (Mapping, dict, typing.Mapping) or hint in (Mapping, dict):
        return "a table"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return "a value"


def _plural(hint: Any) -> str:
    return {int: "whole numbers", float: "numbers", str: "strings", bool: "booleans",
            Path: "paths"}.get(hint, "values")


def convert(key: str, hint: Any, value: Any) -> Any:
    """``value`` checked against ``hint`` (and converted: list -> tuple, str -> Path)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return convert(key, option, value)
            except ConfigError:
                pass
        raise _wrong(key, hint, value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Path:
        if isinstance(value, str):
            return Path(value)
    elif origin is tuple:
        if isinstance(value, list):
            item = args[0] if args else Any
            return tuple(convert(f"{key}[{i}]", item, v) for i, v in enumerate(value))
    elif origin in (Mapping, dict) or dataclasses.is_dataclass(hint):
        if isinstance(value, Mapping):
            if dataclasses.is_dataclass(hint):
                return build_section(key, Section(hint), value)  # type: ignore[arg-type]
            item = args[1] if len(args) == 2 else Any
            return {k: convert(f'{key}."{k}"', item, v) for k, v in value.items()}
    else:
        return value
    raise _wrong(key, hint, value)


def _wrong(key: str, hint: Any, value: Any) -> ConfigError:
    return ConfigError(f"{key} must be {describe(hint)}, not {value!r}.")
