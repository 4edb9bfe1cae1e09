"""The `limits:` section: documented defaults in config.example.yaml, and clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pyheadscale.config import ConfigError, LimitsConfig, build_config

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_documents_the_defaults(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    assert build_config(raw, data_dir=tmp_path).limits == LimitsConfig()


def test_readme_lists_every_limit_key() -> None:
    readme = (ROOT / "README.md").read_text()
    defaults = LimitsConfig()
    for section, model in defaults:
        for key in type(model).model_fields:
            assert f"`limits.{section}.{key}`" in readme, (
                f"README Limits does not list limits.{section}.{key}"
            )


@pytest.mark.parametrize(
    "limits, message",
    [
        ({"connections": {"idle_timeout": "0"}}, "limits.connections.idle_timeout: '0' must be a positive"),
        ({"rate": {"handshakes": {"per_second": 0, "burst": 1}}}, "limits.rate.handshakes.per_second"),
        ({"http2": {"connection_buffer_bytes": 10}}, "limits.http2.connection_buffer_bytes"),
    ],
)
def test_bad_limits_name_the_key(tmp_path: Path, limits: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"limits": limits}, data_dir=tmp_path)
    assert message in str(info.value)


def test_misspelt_limit_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limits = {"conections": {"max": 3}, "rate": {"handshakes": {"per_second": 1, "burst": 1, "brust": 3}}}
    config = build_config({"limits": limits}, data_dir=tmp_path)
    assert config.limits.connections == LimitsConfig().connections
    warnings = [r.getMessage() for r in caplog.records]
    assert "config: unknown key 'limits.conections' is ignored" in warnings
    assert "config: unknown key 'limits.rate.handshakes.brust' is ignored" in warnings
