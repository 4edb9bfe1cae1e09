"""Seed inputs from fixtures/ (requests recorded from real tsnet clients), and strategies that mutate them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def recorded_requests() -> list[dict[str, Any]]:
    records = []
    for path in sorted(FIXTURES.glob("*/*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert records, f"no recorded requests under {FIXTURES}"
    return records


def recorded_bodies(path: str) -> list[bytes]:
    return [r["body"].encode() for r in recorded_requests() if r["path"] == path]


# Any JSON document, nested a few levels.
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=20), children, max_size=6)
    ),
    max_leaves=30,
)


@st.composite
def mutated_bytes(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few byte-level edits: flips, insertions, deletions, truncation, duplication."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@st.composite
def mutated_json(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed JSON object with some fields replaced by arbitrary JSON (wrong types, huge or odd values)."""
    doc = json.loads(draw(st.sampled_from(seeds)))

    def mutate(value: Any, depth: int) -> Any:
        if isinstance(value, dict) and value:
            key = draw(st.sampled_from(sorted(value)))
            if draw(st.booleans()) and depth < 3:
                value[key] = mutate(value[key], depth + 1)
            else:
                value[key] = draw(json_values)
        elif isinstance(value, list) and value and depth < 3:
            value[draw(st.integers(0, len(value) - 1))] = mutate(value[0], depth + 1)
        else:
            return draw(json_values)
        return value

    for _ in range(draw(st.integers(1, 4))):
        doc = mutate(doc, 0)
    return json.dumps(doc).encode()


def deeply_nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth
