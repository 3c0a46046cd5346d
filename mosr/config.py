"""Dataclass configs that round-trip to YAML / JSON; values coerce to their field types, and a bad
value or unknown key is a one-line :class:`ConfigError` naming its key path."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mosr.errors import ConfigError
from mosr.io import write_text

C = TypeVar("C", bound="Config")


@dataclasses.dataclass
class Config:
    """Base class for every mosr config: ``to_dict`` / ``from_dict`` / ``save`` / ``load``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None, where: str | None = None) -> C:
        """Build from a mapping, coercing each value to its field's type; ``where`` names it in errors."""
        where = where or cls.__name__
        if data is not None and not isinstance(data, dict):
            _fail(where, "a mapping", data)
        data = dict(data or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields), key=str)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as e:  # missing required fields
            raise ConfigError(f"{where}: {e}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        path = Path(path)
        text = self.to_yaml() if path.suffix in (".yaml", ".yml") else json.dumps(self.to_dict(), indent=2) + "\n"
        return write_text(path, text)

    @classmethod
    def load(cls: type[C], path: str | os.PathLike[str]) -> C:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot parse config: {e}") from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        return cls.from_dict(data)


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NULL = frozenset({"null", "none", "~"})
_WHAT = {
    bool: "a bool",
    int: "an int",
    float: "a float",
    str: "a string",
    list: "a list",
    tuple: "a tuple",
    dict: "a mapping",
}


def _what(tp: Any) -> str:
    """Human name of what a type hint expects: ``'a float'``, ``'an int or null'``."""
    origin = typing.get_origin(tp) or tp
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _what(a) for a in typing.get_args(tp))
    if isinstance(origin, type) and issubclass(origin, Config):
        return "a mapping"
    return _WHAT.get(origin, getattr(tp, "__name__", str(tp)))


def _fail(where: str, what: str, value: Any, hint: str = "") -> typing.NoReturn:
    """Raise the one-line ConfigError ``<where>: expected <what>, got <value>``."""
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise ConfigError(f"{where}: expected {what}, got {shown}{hint}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Coerce a plain YAML / JSON / ``--set`` value to type hint ``tp``; ConfigError naming ``where`` if it can't."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(tp, args, value, where)
    if tp in (bool, int, float, str):
        return _SCALARS[tp](value, where)
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            _fail(where, "a mapping", value)
        return tp.from_dict(value, where=where)
    if origin is list or tp is list:
        item = args[0] if args else Any
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(_items(value, where, "a list"))]
    if origin is tuple or tp is tuple:
        items = _items(value, where, "a tuple")
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(items)
        elif not args:
            args = (Any,) * len(items)
        elif len(args) != len(items):
            _fail(where, f"a tuple of {len(args)} items", value)
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, items)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            _fail(where, "a mapping", value)
        kt, vt = args if len(args) == 2 else (Any, Any)
        return {_coerce(kt, k, f"{where} key"): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    return value  # Any / unknown hints: untouched


def _coerce_union(tp: Any, args: tuple[Any, ...], value: Any, where: str) -> Any:
    """``X | None`` (and other unions): None or a null word -> None, else the first member that fits."""
    members = [a for a in args if a is not type(None)]
    optional = len(members) < len(args)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in _NULL)):
        return None
    if len(members) == 1:
        return _coerce(members[0], value, where)
    for member in members:  # already the right type: keep it (e.g. an int for ``int | str``)
        plain = isinstance(member, type) and typing.get_origin(member) is None
        if plain and isinstance(value, member) and (member is bool or not isinstance(value, bool)):
            return value
    for member in members:
        try:
            return _coerce(member, value, where)
        except ConfigError:
            continue
    _fail(where, _what(tp), value)


def _items(value: Any, where: str, what: str) -> list[Any]:
    """A list / tuple as is, a comma-separated string split (``'10,20'`` -> ``['10', '20']``), a scalar wrapped."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if value is None or isinstance(value, (dict, set)):
        _fail(where, what, value)
    return [value]


def _to_bool(value: Any, where: str) -> bool:
    """true/false/yes/no/on/off/1/0 (any case), or the ints 0 and 1."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE | _FALSE:
        return word in _TRUE
    _fail(where, "a bool (true/false)", value)


def _number(value: Any) -> int | float | None:
    """An int / float, or a string that parses as one (``'5e-5'``); None otherwise (bools included)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    for parse in (int, float) if isinstance(value, str) else ():
        try:
            return parse(value.strip())
        except ValueError:
            pass
    return None


def _to_int(value: Any, where: str) -> int:
    """An int, or a float / numeric string with an integral value (``'40'``, ``4.0``; not 2.5)."""
    number = _number(value)
    if isinstance(number, int) or (isinstance(number, float) and number.is_integer()):
        return int(number)
    _fail(where, "an int", value)


def _to_float(value: Any, where: str) -> float:
    """An int, float or numeric string as a float."""
    number = _number(value)
    if number is None:
        _fail(where, "a float", value)
    return float(number)


def _to_str(value: Any, where: str) -> str:
    """A string; ints, floats and paths are written out; a YAML boolean word must be quoted."""
    if isinstance(value, (str, int, float, os.PathLike)) and not isinstance(value, bool):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    _fail(where, "a string", value, " (quote it in YAML, e.g. 'no')" if isinstance(value, bool) else "")


_SCALARS: dict[type, typing.Callable[[Any, str], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def apply_overrides(data: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a config mapping.

    Values are coerced to the field types later, by ``Config.from_dict``. A YAML boolean word for a
    field that holds a string (``--set mixed_precision=no``) stays the string as typed."""
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a nested config")
            node = child
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"--set {key}: cannot parse value {value!r} as YAML ({problem})") from None
        if isinstance(parsed, bool) and isinstance(node.get(parts[-1]), str):
            parsed = value.strip()
        node[parts[-1]] = parsed
    return data


def changed_run_error(out: str | os.PathLike[str], keys: list[str], old: dict[str, Any]) -> ConfigError:
    """The one error of every verb whose run folder ``out`` holds a run made with another config: ``keys``
    name the fields that differ, ``old`` holds the folder's values (``mosr eval``, ``mosr train``)."""
    return ConfigError(
        f"{out} holds a run with a different {', '.join(keys)} "
        f"({', '.join(f'{k}={old.get(k)!r}' for k in keys)}): use a new --out folder"
    )
