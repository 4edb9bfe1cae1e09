"""RegisterRequest and MapRequest JSON (pyheadscale/tailcfg/requests.py): any body gives a parsed request or
BadRequest naming the field, seeded from the requests real tsnet clients sent."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from pyheadscale.tailcfg.requests import BadRequest, MapRequest, RegisterRequest, parse_request
from tests.fuzz import bounds
from tests.fuzz.seeds import deeply_nested, json_values, mutated_bytes, mutated_json, recorded_bodies

REGISTER = recorded_bodies("/machine/register")
MAP = recorded_bodies("/machine/map")
MODELS: list[type[Any]] = [RegisterRequest, MapRequest]


def bodies(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated_json(seeds),
        mutated_bytes(seeds),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=512),
    )


def parse(model: type[Any], body: bytes) -> None:
    request = bounds.call(f"tailcfg.{model.__name__}", parse_request, model, body, allowed=(BadRequest,))
    if request is not None:
        assert isinstance(request, model)


@given(bodies(REGISTER))
@example(REGISTER[0])
@example(deeply_nested(100_000).encode())
@example(b'{"NodeKey": ' + deeply_nested(5_000, '{"a":', "}").encode() + b"}")
def test_register_request(body: bytes) -> None:
    parse(RegisterRequest, body)


@given(bodies(MAP))
@example(MAP[0])
@example(b'{"Hostinfo": ' + deeply_nested(10_000).encode() + b"}")
def test_map_request(body: bytes) -> None:
    parse(MapRequest, body)


def test_seeds_parse() -> None:
    for body in REGISTER:
        assert parse_request(RegisterRequest, body).NodeKey.startswith("nodekey:")
    for body in MAP:
        assert parse_request(MapRequest, body).NodeKey.startswith("nodekey:")
