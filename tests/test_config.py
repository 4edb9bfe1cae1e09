"""Configuration: Headscale's keys, embedded defaults, and errors that name the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pyheadscale.config import ConfigError, build_config, load_config, parse_duration

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.yaml"


def test_example_config_loads_with_headscale_keys() -> None:
    config, source = load_config(EXAMPLE)
    assert source == EXAMPLE
    assert config.prefixes.v4 == "100.64.0.0/10"
    assert config.derp.server.enabled is True
    assert config.dns.nameservers.global_ == ["1.1.1.1", "2606:4700:4700::1111"]
    assert config.ephemeral_inactivity_timeout == timedelta(minutes=30)
    assert config.path(config.database.sqlite.path) == EXAMPLE.parent / "db.sqlite"


def test_embedded_defaults_run_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PYHEADSCALE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HEADSCALE_CONFIG", raising=False)
    config, source = load_config(None)
    if source is not None:  # a system-wide /etc/headscale/config.yaml would be found first
        pytest.skip(f"a config file exists at {source}; embedded defaults are not used on this machine")
    assert config.listen_addr == "127.0.0.1:8080"
    assert config.derp.server.enabled, "the one-command start needs its own relay"
    assert Path(config.data_dir) == tmp_path / "data"


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ({"prefixes": {"v4": "100.64.0.0/33"}}, "prefixes.v4", "not a valid IPv4 prefix"),
        ({"prefixes": {"v4": "", "v6": ""}}, "prefixes", "at least one"),
        ({"prefixes": {"allocation": "roundrobin"}}, "prefixes.allocation", "'roundrobin' is not allowed"),
        ({"server_url": "ftp://x"}, "server_url", "http(s) URL"),
        ({"listen_addr": "nope"}, "listen_addr", "host:port"),
        ({"derp": {"update_frequency": "soon"}}, "derp.update_frequency", "not a duration"),
        ({"derp": {"server": {"region_id": 0}}}, "derp.server.region_id", "region id"),
        ({"database": {"type": "mysql"}}, "database.type", "'mysql' is not allowed"),
        ({"dns": {"base_domain": "bad domain!"}}, "dns.base_domain", "not a valid domain"),
        ({"policy": {"mode": "cloud"}}, "policy.mode", "'cloud' is not allowed"),
    ],
)
def test_errors_name_the_key_and_the_problem(raw: dict, key: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(raw, data_dir=tmp_path)
    message = str(info.value)
    assert f"{key}:" in message
    assert problem in message


def test_legacy_ephemeral_key_wins(tmp_path: Path) -> None:
    config = build_config({"ephemeral_node_inactivity_timeout": "90s"}, data_dir=tmp_path)
    assert config.ephemeral_inactivity_timeout == timedelta(seconds=90)


def test_not_yaml_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="YAML mapping"):
        load_config(path)
    path.write_text("server_url: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0), ("90s", 90), ("1h30m", 5400), ("3h", 10800), (45, 45)]
)
def test_go_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_example_config_has_no_unknown_or_removed_key(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.WARNING, "pyheadscale.config"):
        config, _ = load_config(EXAMPLE)
    assert [r.getMessage() for r in caplog.records] == []
    assert config.taildrop.enabled and not config.auto_update.enabled and not config.tls_enabled
