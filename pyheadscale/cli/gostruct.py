"""headscale.v1 messages as Headscale's CLI prints them: Go's encoding/json and yaml.v3 of its structs.

JSON (`-o json`, `-o json-line`): proto field names, fields at their zero value left out (omitempty), ids as
numbers, enums as numbers, a Timestamp as {"seconds", "nanos"}; `<`, `>` and `&` escaped as Go escapes them.
YAML (`-o yaml`): every field, keyed by the Go field name in lower case (`ip_addresses` -> `ipaddresses`),
unset messages as null, indented by four as yaml.v3 writes it.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_TIMESTAMP = "google.protobuf.Timestamp"


def _is_zero(field: FieldDescriptor, message: Message) -> bool:
    if field.is_repeated:
        return len(getattr(message, field.name)) == 0
    if field.message_type is not None:
        return not message.HasField(field.name)
    return not getattr(message, field.name)


def _json_scalar(field: FieldDescriptor, value: Any) -> Any:
    return json_value(value) if field.message_type is not None else value


def json_value(value: Any) -> Any:
    """A message (or a list of them, or plain data) as encoding/json sees the Go struct."""
    if isinstance(value, list):
        return [json_value(item) for item in value] or None
    if not isinstance(value, Message):
        return value
    out: dict[str, Any] = {}
    for field in value.DESCRIPTOR.fields:
        if _is_zero(field, value):
            continue
        item = getattr(value, field.name)
        out[field.name] = (
            [_json_scalar(field, v) for v in item] if field.is_repeated else _json_scalar(field, item)
        )
    return out


def _yaml_key(name: str) -> str:
    return name.replace("_", "").lower()


def yaml_value(value: Any) -> Any:
    """A message (or a list of them, or plain data) as yaml.v3 sees the Go struct: every field present."""
    if isinstance(value, list):
        return [yaml_value(item) for item in value]
    if not isinstance(value, Message):
        return value
    if value.DESCRIPTOR.full_name == _TIMESTAMP:
        return {"seconds": value.seconds, "nanos": value.nanos}
    out: dict[str, Any] = {}
    for field in value.DESCRIPTOR.fields:
        item = getattr(value, field.name)
        if field.is_repeated:
            out[_yaml_key(field.name)] = [yaml_value(v) for v in item]
        elif field.message_type is not None:
            out[_yaml_key(field.name)] = yaml_value(item) if value.HasField(field.name) else None
        else:
            out[_yaml_key(field.name)] = item
    return out


def _go_escape(text: str) -> str:
    """encoding/json's HTML-safe escaping, applied to already-encoded JSON text."""
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def dumps_json(value: Any, *, indent: bool) -> str:
    data = json_value(value)
    if indent:
        return _go_escape(json.dumps(data, indent="\t", ensure_ascii=False))
    return _go_escape(json.dumps(data, separators=(",", ":"), ensure_ascii=False))


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    plain = yaml.safe_dump(text, default_flow_style=True, width=1 << 20).removesuffix("\n...\n").rstrip("\n")
    # yaml.v3 quotes with double quotes where a plain scalar would not read back as this string.
    return json.dumps(text, ensure_ascii=False) if plain[:1] in ("'", '"') or not text else plain


def _inline(item: Any) -> str | None:
    """An empty collection or a scalar, written on its key's line; None for a non-empty collection."""
    if isinstance(item, dict | list):
        return None if item else ("{}" if isinstance(item, dict) else "[]")
    return _yaml_scalar(item)


def _yaml_lines(value: Any, level: int, key_column: int | None = None) -> list[str]:
    """Block YAML as yaml.v3 lays it out with its indent of four: what a key holds is indented four past
    the level of the mapping holding it; a mapping that is a sequence item has the level of its `- `
    while its keys stand after the `- `."""
    column = level if key_column is None else key_column
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            inline = _inline(item)
            if inline is not None:
                lines.append(f"{' ' * column}{key}: {inline}")
            else:
                lines.append(f"{' ' * column}{key}:")
                lines.extend(_yaml_lines(item, level + 4))
    elif isinstance(value, list):
        for item in value:
            inline = _inline(item)
            if inline is not None:
                lines.append(f"{' ' * column}- {inline}")
            elif isinstance(item, dict):
                nested = _yaml_lines(item, column, column + 2)
                lines.append(f"{' ' * column}- {nested[0][column + 2 :]}")
                lines.extend(nested[1:])
            else:
                nested = _yaml_lines(item, column + 2)
                lines.append(f"{' ' * column}- {nested[0][column + 2 :]}")
                lines.extend(nested[1:])
    else:
        lines.append(" " * column + _yaml_scalar(value))
    return lines


def dumps_yaml(value: Any) -> str:
    """The document with its final newline, as yaml.v3 ends it (printing it adds another, as Go's does)."""
    data = yaml_value(value)
    inline = _inline(data)
    if inline is not None:
        return inline + "\n"
    return "\n".join(_yaml_lines(data, 0)) + "\n"
