"""Config YAML (pyheadscale/config.py): any file gives a Config or ConfigError naming what is wrong."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from pyheadscale.config import ConfigError, build_config, load_config
from tests.fuzz import bounds
from tests.fuzz.seeds import deeply_nested, json_values, mutated_bytes

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
SEEDS = [EXAMPLE.read_bytes(), b"server_url: http://127.0.0.1:8080\nlisten_addr: 127.0.0.1:8080\n"]
KEYS = ["server_url", "listen_addr", "prefixes", "derp", "dns", "oidc", "policy", "database", "node", "noise"]


@st.composite
def config_dicts(draw: st.DrawFn) -> dict[str, Any]:
    base = yaml.safe_load(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        base[draw(st.sampled_from(KEYS))] = draw(json_values)
    return base


files = st.one_of(
    mutated_bytes(SEEDS),
    config_dicts().map(lambda d: yaml.safe_dump(d).encode()),
    st.binary(max_size=100),
)


def load(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(data)
        bounds.call("config.yaml", load_config, str(path), allowed=(ConfigError,))


@given(files)
@example(deeply_nested(20_000).encode())
@example(b"\xff\xfe not utf-8")
@example(
    b"a: &a [1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]\n"
)
def test_config_file(data: bytes) -> None:
    load(data)


@given(config_dicts())
def test_config_mapping(raw: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bounds.call("config.mapping", build_config, raw, allowed=(ConfigError,), data_dir=Path(tmp))
