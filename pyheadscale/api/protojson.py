"""Messages to and from the JSON Headscale's grpc-gateway speaks (protojson with unpopulated fields emitted).

Output: lowerCamelCase names, every field present in declaration order (zero values included, an unset message
as null), 64-bit integers as decimal strings, enums by name, Timestamps in RFC 3339. Input: either the JSON
name or the proto name, 64-bit integers as strings or numbers, enums by name or number, unknown fields
ignored, as the gateway's unmarshaler is set up.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pyheadscale.api.errors import invalid

Json = dict[str, Any]

_TIMESTAMP = "google.protobuf.Timestamp"
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    if field.type in _INT64_TYPES:
        return str(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


def to_json(message: Message) -> Any:
    """One message as the gateway writes it (a Timestamp is a string, every other message an object)."""
    descriptor: Descriptor = message.DESCRIPTOR
    if descriptor.full_name == _TIMESTAMP:
        return message.ToJsonString()
    out: Json = {}
    for field in descriptor.fields:
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            out[field.json_name] = {str(k): _scalar(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.json_name] = [_scalar(field, item) for item in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(field.name):
            out[field.json_name] = None
        else:
            out[field.json_name] = _scalar(field, value)
    return out


def from_json(values: Json, message_class: type[Message]) -> Message:
    """A request message from gateway JSON; bad input is a 400 naming the field."""
    message = message_class()
    try:
        json_format.ParseDict(values, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise invalid(str(exc)) from None
    return message
