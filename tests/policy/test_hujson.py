"""Tests for the hand-written HuJSON parser."""

import json

import pytest

from pyheadscale.policy.hujson import HuJSONError, Position, loads, parse


def test_plain_json_round_trips() -> None:
    text = '{"a": [1, 2.5, -3e2, true, false, null], "b": "x\\u00e9\\n", "c": {}}'
    assert loads(text) == json.loads(text)


def test_comments_and_trailing_commas() -> None:
    text = """
    // leading comment
    {
      "acls": [ /* inline */
        {"action": "accept", "src": ["*"], "dst": ["*:*"],}, // trailing
      ],
    }
    """
    assert loads(text) == {"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}


def test_surrogate_pair_escape() -> None:
    assert loads('"\\ud83d\\ude00"') == "\U0001f600"


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ('{\n  "a": 1\n  "b": 2\n}', 3, 3, "expected ',' or '}'"),
        ('{"a": [1, 2}', 1, 12, "expected ',' or ']'"),
        ('{\n "a": tru }', 2, 7, "expected a value"),
        ("/* never closed", 1, 1, "unterminated block comment"),
        ('{"a": "x', 1, 7, "unterminated string"),
        ('{"a": 01}', 1, 7, "invalid number"),
        ('{"a": 1, "a": 2}', 1, 10, "duplicate object key"),
        ("", 1, 1, "empty document"),
        ("[1] 2", 1, 5, "after the top-level value"),
        ('["\\q"]', 1, 3, "invalid escape"),
        ("{,}", 1, 2, "expected a string object key"),
    ],
)
def test_errors_have_exact_positions(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(HuJSONError) as info:
        loads(text)
    assert info.value.position == Position(line, column)
    assert fragment in info.value.message
    assert str(info.value).startswith(f"{line}:{column}: ")


def test_positions_table_points_at_values() -> None:
    doc = parse('{\n  "acls": [\n    {"src": ["a", "b"]}\n  ]\n}')
    assert doc.positions[("acls",)] == Position(2, 11)
    assert doc.positions[("acls", 0, "src", 1)] == Position(3, 19)
    assert doc.position_of(("acls", 0, "src", 7)) == Position(3, 13)
