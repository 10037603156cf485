"""Records as JSON and CSV: a codec and a JSON Schema, both derived from the dataclasses' type hints.

Used by the benchmark report and the trial cache.

Nothing here knows any particular record: :func:`json_schema` walks any frozen dataclass (fields typed with
``int``, ``float``, ``str``, ``bool``, str-valued enums, ``X | None``, ``tuple[X, ...]`` and nested dataclasses),
so the schema cannot drift from the code. Constraints come from each field's ``metadata``:

- ``minimum`` / ``exclusive_minimum``: bounds of a number (default: numbers and integers are ``>= 0``, which every
  measured quantity is; ``signed=True`` lifts that);
- ``min_items`` and ``item_minimum`` for tuples; ``const`` for a fixed value (the schema's own name).

:func:`validate` checks data against such a schema (the subset of JSON Schema draft 2020-12 it emits), so reading
a report needs no third-party validator.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import TypeAlias, Union

from awq_autoselect.errors import InvalidReportError

__all__ = ["JSONValue", "csv_cell", "csv_value", "from_json", "json_schema", "to_json", "validate"]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None


# --- the codec ---------------------------------------------------------------------------------------------


def to_json(value: object) -> JSONValue:
    """A record (dataclass), enum, tuple or plain value as JSON data; refuses non-finite floats."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write the non-finite number {value!r} to a benchmark report")
        return value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"cannot serialise {type(value).__name__} in a benchmark report")


def _non_null(tp: object) -> object:
    """``X`` of an optional type ``X | None`` (the records never use wider unions)."""
    (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
    return inner


def from_json(tp: object, data: object, where: str = "$") -> object:
    """Rebuild a value of type ``tp`` from JSON data (already checked against its :func:`json_schema`).

    Raises:
        InvalidReportError: the data does not fit the type.
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        return from_json(_non_null(tp), data, where)
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(data, list):
            raise InvalidReportError(f"{where}: expected a list")
        return tuple(from_json(item_type, v, f"{where}[{i}]") for i, v in enumerate(data))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise InvalidReportError(f"{where}: expected an object")
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: from_json(hints[f.name], data[f.name], f"{where}.{f.name}") for f in dataclasses.fields(tp)}
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            raise InvalidReportError(f"{where}: {data!r} is not a {tp.__name__}") from None
    if tp is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if isinstance(tp, type) and isinstance(data, tp) and not (tp is int and isinstance(data, bool)):
        return data
    raise InvalidReportError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {data!r}")


# --- the schema, derived ----------------------------------------------------------------------------------


def _scalar(tp: object, meta: Mapping[str, object]) -> dict[str, JSONValue]:
    if tp is bool:
        return {"type": "boolean"}
    if tp is str:
        return {"type": "string"}
    if tp in (int, float):
        schema: dict[str, JSONValue] = {"type": "integer" if tp is int else "number"}
        if "exclusive_minimum" in meta:
            schema["exclusiveMinimum"] = typing.cast("float", meta["exclusive_minimum"])
        elif not meta.get("signed", False):
            schema["minimum"] = typing.cast("float", meta.get("minimum", 0))
        return schema
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    raise TypeError(f"json_schema: no JSON form for the type {tp!r}")


def json_schema(
    root: type, *, names: Mapping[type, str], title: str = "", description: str = ""
) -> dict[str, JSONValue]:
    """The JSON Schema of ``root``'s :func:`to_json` output: ``root`` inline, nested records under ``$defs``.

    ``names`` gives each nested record's key in ``$defs``.
    """
    defs: dict[str, JSONValue] = {}

    def record(cls: type) -> dict[str, JSONValue]:
        hints = typing.get_type_hints(cls)
        properties: dict[str, JSONValue] = {}
        for f in dataclasses.fields(cls):
            properties[f.name] = of(hints[f.name], f.metadata)
        return {
            "type": "object",
            "properties": properties,
            "required": list[JSONValue](sorted(properties)),
            "additionalProperties": False,
        }

    def of(tp: object, meta: Mapping[str, object]) -> dict[str, JSONValue]:
        if "const" in meta:
            return {"const": typing.cast("str", meta["const"])}
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            return {"anyOf": [of(_non_null(tp), meta), {"type": "null"}]}
        if origin is tuple:
            item_meta = {"minimum": meta["item_minimum"]} if "item_minimum" in meta else {}
            array: dict[str, JSONValue] = {"type": "array", "items": of(typing.get_args(tp)[0], item_meta)}
            if "min_items" in meta:
                array["minItems"] = typing.cast("int", meta["min_items"])
            return array
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            name = names[tp]
            if name not in defs:
                defs[name] = {}  # placeholder: a record that contains itself
                defs[name] = record(tp)
            return {"$ref": f"#/$defs/{name}"}
        return _scalar(tp, meta)

    body = record(root)
    head: dict[str, JSONValue] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if title:
        head["title"] = title
    if description:
        head["description"] = description
    return {**head, **body, "$defs": dict(sorted(defs.items()))}


# --- validation ---------------------------------------------------------------------------------------------


def validate(data: object, schema: Mapping[str, JSONValue]) -> list[str]:
    """Check ``data`` against ``schema``; return every problem found (empty: valid).

    Implements the subset of JSON Schema that :func:`json_schema` emits: ``type``, ``const``, ``enum``,
    ``properties``, ``required``, ``additionalProperties: false``, ``items``, ``minItems``, ``minimum``,
    ``exclusiveMinimum``, ``anyOf`` and local ``$ref``.
    """
    problems: list[str] = []
    _check(data, schema, schema, "$", problems)
    return problems


_JSON_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _check(
    data: object, schema: Mapping[str, JSONValue], root: Mapping[str, JSONValue], where: str, problems: list[str]
) -> None:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target: JSONValue = dict(root)
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict), ref
            target = target[part]
        assert isinstance(target, dict), ref
        _check(data, target, root, where, problems)
        return
    any_of = schema.get("anyOf")
    if isinstance(any_of, list):
        for option in any_of:
            assert isinstance(option, dict)
            trial: list[str] = []
            _check(data, option, root, where, trial)
            if not trial:
                break
        else:
            problems.append(f"{where}: {_short_repr(data)} matches none of the allowed forms")
        return
    if "const" in schema and data != schema["const"]:
        problems.append(f"{where}: expected {schema['const']!r}, got {_short_repr(data)}")
        return
    allowed = schema.get("enum")
    if isinstance(allowed, list) and data not in allowed:
        problems.append(f"{where}: {_short_repr(data)} is not one of {allowed}")
        return
    kind = schema.get("type")
    if isinstance(kind, str) and not _JSON_TYPES[kind](data):
        problems.append(f"{where}: expected {kind}, got {_short_repr(data)}")
        return
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        if isinstance(data, float) and not math.isfinite(data):
            problems.append(f"{where}: {data!r} is not a finite number")
        minimum = schema.get("minimum")
        if isinstance(minimum, (int, float)) and data < minimum:
            problems.append(f"{where}: {data!r} is below the minimum {minimum}")
        exclusive = schema.get("exclusiveMinimum")
        if isinstance(exclusive, (int, float)) and data <= exclusive:
            problems.append(f"{where}: {data!r} must be greater than {exclusive}")
    if isinstance(data, dict):
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        for name in required if isinstance(required, list) else []:
            if isinstance(name, str) and name not in data:
                problems.append(f"{where}: missing {name!r}")
        for name, value in data.items():
            sub = props.get(name)
            if isinstance(sub, dict):
                _check(value, sub, root, f"{where}.{name}", problems)
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}: unexpected key {name!r}")
    if isinstance(data, list):
        min_items = schema.get("minItems")
        if isinstance(min_items, int) and len(data) < min_items:
            problems.append(f"{where}: needs at least {min_items} item(s)")
        items = schema.get("items")
        if isinstance(items, dict):
            for i, value in enumerate(data):
                _check(value, items, root, f"{where}[{i}]", problems)


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- CSV cells ------------------------------------------------------------------------------------------------


def csv_cell(value: object) -> str:
    """One CSV cell: empty for None, enum values, ``true``/``false``, floats that read back exactly."""
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def csv_value(tp: object, text: str, where: str) -> object:
    """One CSV cell read back as type ``tp``.

    Raises:
        InvalidReportError: the text is not a value of that type.
    """
    if typing.get_origin(tp) in (Union, types.UnionType):
        if text == "":
            return None
        tp = _non_null(tp)
    try:
        if tp is bool:
            if text not in ("true", "false"):
                raise ValueError(text)
            return text == "true"
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return tp(text)
    except ValueError:
        raise InvalidReportError(f"{where}: {text!r} is not a valid {getattr(tp, '__name__', tp)}") from None
    return text
