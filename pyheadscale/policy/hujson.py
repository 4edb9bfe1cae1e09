"""A hand-written HuJSON (JWCC: JSON With Commas and Comments) parser.

HuJSON is JSON plus ``//`` line comments, ``/* */`` block comments and a
trailing comma after the last element of an array or object. Policy files are
written by hand, so every error carries the exact line and column (both
1-based, columns counted in characters) where the parser gave up.

Besides the value, :func:`parse` returns a table from *path* (the tuple of
object keys and array indexes leading to a value) to the position where that
value starts, so later validation can point at the offending entry.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass, field
from typing import Any

JSONPath = tuple[str | int, ...]

_WHITESPACE = " \t\r\n"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUMBER_CHARS = frozenset("0123456789+-.eE")
#: What the parser skips or copies in one step (not one character at a time): runs of whitespace, and runs of
#: string characters that need no escape.
_SPACE_RUN = re.compile(r"[ \t\r\n]*")
_PLAIN_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]*')
# No policy nests anywhere near this deep; the limit keeps the recursive parser (and the position table, whose
# keys grow with the depth) bounded on hostile input.
MAX_DEPTH = 64


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in the source text."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


class HuJSONError(ValueError):
    """Malformed HuJSON; ``str()`` starts with ``line:column``."""

    def __init__(self, message: str, position: Position) -> None:
        super().__init__(f"{position}: {message}")
        self.message = message
        self.position = position


def _end_of_run(pattern: re.Pattern[str], text: str, index: int) -> int:
    """Where the run of ``pattern`` (which matches the empty string too) that starts at ``index`` ends."""
    match = pattern.match(text, index)
    assert match is not None
    return match.end()


class _Lines:
    """Where each line of a text starts, found when a position is first asked for (errors only, mostly)."""

    def __init__(self, text: str) -> None:
        self.text = text

    @functools.cached_property
    def starts(self) -> list[int]:
        return [0] + [match.end() for match in re.finditer("\n", self.text)]

    def position(self, offset: int) -> Position:
        starts = self.starts
        line = bisect.bisect_right(starts, offset)
        return Position(line, offset - starts[line - 1] + 1)


@dataclass
class Document:
    """A parsed HuJSON document: its value and where each value starts (as character offsets, turned into
    positions when asked: only errors need them)."""

    value: Any
    offsets: dict[JSONPath, int]
    _lines: _Lines = field(repr=False, compare=False)

    @functools.cached_property
    def positions(self) -> dict[JSONPath, Position]:
        """Where each value starts."""
        return {path: self._lines.position(offset) for path, offset in self.offsets.items()}

    def position_of(self, path: JSONPath) -> Position | None:
        """Position of the value at ``path``, or of its nearest ancestor."""
        while True:
            found = self.offsets.get(path)
            if found is not None:
                return self._lines.position(found)
            if not path:
                return None
            path = path[:-1]


def parse(text: str) -> Document:
    """Parse HuJSON ``text`` into plain Python values (dict, list, str, int, float, bool, None)."""
    parser = _Parser(text)
    value = parser.parse_document()
    return Document(value, parser.offsets, parser.lines)


def loads(text: str) -> Any:
    """Parse HuJSON ``text`` and return only the value."""
    return parse(text).value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0
        self.offsets: dict[JSONPath, int] = {}
        self.lines = _Lines(text)

    def position(self, index: int | None = None) -> Position:
        return self.lines.position(self.index if index is None else index)

    def fail(self, message: str, index: int | None = None) -> HuJSONError:
        return HuJSONError(message, self.position(index))

    def parse_document(self) -> Any:
        self.skip_insignificant()
        if self.index >= len(self.text):
            raise self.fail("empty document, expected a value")
        value = self.parse_value(())
        self.skip_insignificant()
        if self.index < len(self.text):
            raise self.fail(f"unexpected {self.describe_here()} after the top-level value")
        return value

    def describe_here(self) -> str:
        if self.index >= len(self.text):
            return "end of input"
        return repr(self.text[self.index])

    def skip_insignificant(self) -> None:
        """Skip whitespace and comments."""
        text = self.text
        length = len(text)
        while self.index < length:
            ch = text[self.index]
            if ch in _WHITESPACE:
                self.index = _end_of_run(_SPACE_RUN, text, self.index)
            elif text.startswith("//", self.index):
                end = text.find("\n", self.index)
                self.index = length if end < 0 else end + 1
            elif text.startswith("/*", self.index):
                end = text.find("*/", self.index + 2)
                if end < 0:
                    raise self.fail("unterminated block comment")
                self.index = end + 2
            else:
                return

    def parse_value(self, path: JSONPath) -> Any:
        if len(path) > MAX_DEPTH:
            raise self.fail(f"values nested more than {MAX_DEPTH} levels deep")
        self.offsets[path] = self.index
        ch = self.text[self.index] if self.index < len(self.text) else ""
        if ch == "{":
            return self.parse_object(path)
        if ch == "[":
            return self.parse_array(path)
        if ch == '"':
            return self.parse_string()
        if ch == "-" or ch.isdigit():
            return self.parse_number()
        for literal, value in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(literal, self.index):
                end = self.index + len(literal)
                if end < len(self.text) and (self.text[end].isalnum() or self.text[end] == "_"):
                    break
                self.index = end
                return value
        raise self.fail(f"unexpected {self.describe_here()}, expected a value")

    def parse_object(self, path: JSONPath) -> dict[str, Any]:
        self.index += 1
        result: dict[str, Any] = {}
        while True:
            self.skip_insignificant()
            if self.index >= len(self.text):
                raise self.fail("unexpected end of input in object, expected '}'")
            if self.text[self.index] == "}":
                self.index += 1
                return result
            if self.text[self.index] != '"':
                raise self.fail(f"unexpected {self.describe_here()}, expected a string object key")
            key_index = self.index
            key = self.parse_string()
            if key in result:
                raise self.fail(f"duplicate object key {key!r}", key_index)
            self.skip_insignificant()
            if self.index >= len(self.text) or self.text[self.index] != ":":
                raise self.fail(f"unexpected {self.describe_here()}, expected ':' after object key")
            self.index += 1
            self.skip_insignificant()
            result[key] = self.parse_value((*path, key))
            self.skip_insignificant()
            if self.index < len(self.text) and self.text[self.index] == ",":
                self.index += 1
            elif self.index < len(self.text) and self.text[self.index] == "}":
                continue
            else:
                raise self.fail(f"unexpected {self.describe_here()}, expected ',' or '}}' in object")

    def parse_array(self, path: JSONPath) -> list[Any]:
        self.index += 1
        result: list[Any] = []
        while True:
            self.skip_insignificant()
            if self.index >= len(self.text):
                raise self.fail("unexpected end of input in array, expected ']'")
            if self.text[self.index] == "]":
                self.index += 1
                return result
            result.append(self.parse_value((*path, len(result))))
            self.skip_insignificant()
            if self.index < len(self.text) and self.text[self.index] == ",":
                self.index += 1
            elif self.index < len(self.text) and self.text[self.index] == "]":
                continue
            else:
                raise self.fail(f"unexpected {self.describe_here()}, expected ',' or ']' in array")

    def parse_string(self) -> str:
        text = self.text
        start = self.index
        self.index += 1
        pieces: list[str] = []
        run_start = self.index
        while True:
            self.index = _end_of_run(_PLAIN_STRING_RUN, text, self.index)
            if self.index >= len(text):
                raise self.fail("unterminated string", start)
            ch = text[self.index]
            if ch == '"':
                pieces.append(text[run_start : self.index])
                self.index += 1
                return "".join(pieces)
            if ch != "\\":
                raise self.fail(f"control character {ch!r} in string must be escaped")
            pieces.append(text[run_start : self.index])
            pieces.append(self.parse_escape())
            run_start = self.index

    def parse_escape(self) -> str:
        escape_index = self.index
        self.index += 1
        if self.index >= len(self.text):
            raise self.fail("unterminated escape sequence", escape_index)
        kind = self.text[self.index]
        if kind in _ESCAPES:
            self.index += 1
            return _ESCAPES[kind]
        if kind != "u":
            raise self.fail(f"invalid escape sequence '\\{kind}'", escape_index)
        code = self.read_hex4(escape_index)
        if 0xD800 <= code < 0xDC00 and self.text.startswith("\\u", self.index):
            low_index = self.index
            self.index += 1
            low = self.read_hex4(low_index)
            if 0xDC00 <= low < 0xE000:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
            return chr(code) + chr(low)
        return chr(code)

    def read_hex4(self, escape_index: int) -> int:
        digits = self.text[self.index + 1 : self.index + 5]
        if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise self.fail("invalid \\u escape, expected four hex digits", escape_index)
        self.index += 5
        return int(digits, 16)

    def parse_number(self) -> int | float:
        start = self.index
        text = self.text
        end = start
        while end < len(text) and text[end] in _NUMBER_CHARS:
            end += 1
        literal = text[start:end]
        if not _is_json_number(literal):
            raise self.fail(f"invalid number {literal!r}", start)
        self.index = end
        if any(c in literal for c in ".eE"):
            return float(literal)
        return int(literal)


def _is_json_number(literal: str) -> bool:
    """Strict JSON number grammar: no leading '+', no leading zeros, digits around '.'."""
    rest = literal[1:] if literal.startswith("-") else literal
    integer, _, fraction_and_exponent = rest.partition(".")
    if "." not in rest:
        integer, exponent_marker, exponent = _split_exponent(rest)
        fraction = None
    else:
        fraction, exponent_marker, exponent = _split_exponent(fraction_and_exponent)
    if not integer.isdigit() or (len(integer) > 1 and integer[0] == "0"):
        return False
    if fraction is not None and not fraction.isdigit():
        return False
    if exponent_marker:
        digits = exponent[1:] if exponent[:1] in ("+", "-") else exponent
        return digits.isdigit()
    return True


def _split_exponent(part: str) -> tuple[str, str, str]:
    for marker in ("e", "E"):
        if marker in part:
            head, _, tail = part.partition(marker)
            return head, marker, tail
    return part, "", ""
