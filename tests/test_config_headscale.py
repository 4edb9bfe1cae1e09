"""The configuration means what it means in Headscale v0.29.2: environment overrides, removed and unknown
keys, and the keys pyheadscale used to accept and ignore."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from pyheadscale import config_keys
from pyheadscale.cli.client import resolve_target
from pyheadscale.cli.main import JSONLogFormatter, build_parser, configure_logging
from pyheadscale.cli.main import _remote_from_config as remote_from_config
from pyheadscale.config import Config, ConfigError, build_config, load_config
from pyheadscale.mapper.builder import _dns_config as dns_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- environment -------------------------------------------------------------------------------------------


def test_environment_overrides_file_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = write(
        tmp_path / "config.yaml",
        "server_url: http://file.example:8080\ndns:\n  base_domain: file.example\n  magic_dns: true\n",
    )
    monkeypatch.setenv("HEADSCALE_SERVER_URL", "https://env.example")
    monkeypatch.setenv("HEADSCALE_DNS_BASE_DOMAIN", "env.internal")
    monkeypatch.setenv("HEADSCALE_DNS_MAGIC_DNS", "false")
    monkeypatch.setenv("HEADSCALE_DNS_NAMESERVERS_GLOBAL", "1.1.1.1 9.9.9.9")
    monkeypatch.setenv("HEADSCALE_DNS_NAMESERVERS_SPLIT", '{"corp.example": ["10.0.0.53"]}')
    monkeypatch.setenv("HEADSCALE_NODE_EXPIRY", "90d")
    monkeypatch.setenv("HEADSCALE_DERP_SERVER_ENABLED", "true")
    monkeypatch.setenv("HEADSCALE_DATABASE_POSTGRES_PASS", "from-env")
    monkeypatch.setenv("HEADSCALE_OIDC_SCOPE", '["openid", "email"]')
    config, _source = load_config(config_file)
    assert config.server_url == "https://env.example"
    assert config.dns.base_domain == "env.internal"
    assert config.dns.magic_dns is False
    assert config.dns.nameservers.global_ == ["1.1.1.1", "9.9.9.9"]
    assert config.dns.nameservers.split == {"corp.example": ["10.0.0.53"]}
    assert config.node.expiry == timedelta(days=90)
    assert config.derp.server.enabled is True
    assert config.database.postgres.pass_.get_secret_value() == "from-env"
    assert config.oidc.scope == ["openid", "email"]
    monkeypatch.setenv("HEADSCALE_DATA_DIR", str(tmp_path / "elsewhere"))
    config, _source = load_config(config_file)
    assert config.path("db.sqlite") == tmp_path / "elsewhere" / "db.sqlite"


def test_empty_environment_variable_is_not_a_value(tmp_path: Path) -> None:
    config = build_config(
        {"server_url": "http://file.example"}, data_dir=tmp_path, environ={"HEADSCALE_SERVER_URL": ""}
    )
    assert config.server_url == "http://file.example"


def test_deeply_nested_mapping_is_refused_not_a_crash(tmp_path: Path) -> None:
    raw: dict[str, Any] = {}
    node = raw
    for _ in range(5000):
        node["dns"] = {}
        node = node["dns"]
    with pytest.raises(ConfigError, match="nested deeper than"):
        build_config(raw, data_dir=tmp_path)


def test_every_model_key_has_its_environment_name() -> None:
    """HEADSCALE_ + the dotted key with dots as underscores, upper-cased, for every key of the model."""
    leaves = dict(config_keys.model_keys(Config))
    assert {"server_url", "dns.nameservers.global", "database.postgres.pass", "cli.api_key"} <= set(leaves)
    for dotted in leaves:
        name = config_keys.env_name(dotted)
        assert name == "HEADSCALE_" + dotted.replace(".", "_").upper()
        merged, applied = config_keys.apply_environment(Config, {}, {name: "marker"})
        assert applied == [dotted]
        value = config_keys.lookup(merged, dotted)
        assert value in ("marker", ["marker"]), (dotted, value)


def test_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADSCALE_NODE_EXPIRY", "soon")
    with pytest.raises(ConfigError, match=r"node\.expiry: 'soon' is not a duration"):
        load_config(write(tmp_path / "c.yaml", "{}\n"))
    monkeypatch.setenv("HEADSCALE_NODE_EXPIRY", "0")
    monkeypatch.setenv("HEADSCALE_DNS_NAMESERVERS_SPLIT", "{unclosed")
    with pytest.raises(ConfigError, match="HEADSCALE_DNS_NAMESERVERS_SPLIT: not valid YAML"):
        load_config(write(tmp_path / "c.yaml", "{}\n"))


def test_headscale_config_naming_a_missing_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADSCALE_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError) as info:
        load_config(None)
    assert "missing.yaml" in str(info.value) and "HEADSCALE_CONFIG" in str(info.value)
    present = write(tmp_path / "present.yaml", "server_url: http://present.example\n")
    monkeypatch.setenv("HEADSCALE_CONFIG", str(present))
    config, source = load_config(None)
    assert (source, config.server_url) == (present, "http://present.example")


# --- removed, deprecated and unknown keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"randomize_client_port": True}, '"randomizeClientPort": true at the top level of the policy'),
        (
            {"oidc": {"expiry": "180d"}},
            "'oidc.expiry' was removed from Headscale's configuration: use 'node.expiry'",
        ),
        ({"dns_config": {"magic_dns": True}}, "'dns_config.magic_dns' was removed"),
        ({"dns_config": {"nameservers": ["1.1.1.1"]}}, "use 'dns.nameservers.global' instead"),
        ({"acl_policy_path": "/etc/acl.hujson"}, "use 'policy.path' instead"),
        ({"dns": {"use_username_in_magic_dns": True}}, "'dns.use_username_in_magic_dns' was removed"),
        ({"oidc": {"map_legacy_users": True}}, "'oidc.map_legacy_users' was removed"),
    ],
)
def test_keys_headscale_removed_are_refused(raw: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(raw, data_dir=tmp_path)
    assert message in str(info.value)


def test_removed_key_from_the_environment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="randomize_client_port"):
        build_config({}, data_dir=tmp_path, environ={"HEADSCALE_RANDOMIZE_CLIENT_PORT": "true"})


def test_old_key_beside_its_replacement_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "pyheadscale.config"):
        config = build_config(
            {"dns_config": {"magic_dns": False}, "dns": {"magic_dns": True}}, data_dir=tmp_path
        )
    assert config.dns.magic_dns is True
    assert "'dns_config.magic_dns' was removed" in caplog.text


def test_unknown_nested_keys_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = {
        "dns": {"magic_dsn": True, "nameservers": {"globl": ["1.1.1.1"]}},
        "derp": {"server": {"enabeld": True}},
        "surprise": 1,
        # Headscale keys with no meaning in pyheadscale are accepted quietly.
        "tuning": {"batch_change_delay": "800ms"},
        "database": {"gorm": {"prepare_stmt": True}, "debug": False},
        "node": {"routes": {"ha": {"probe_interval": "10s"}}},
        "grpc_listen_addr": "127.0.0.1:50443",
    }
    with caplog.at_level(logging.WARNING, "pyheadscale.config"):
        build_config(raw, data_dir=tmp_path)
    unknown = sorted(r.getMessage() for r in caplog.records if "unknown key" in r.getMessage())
    assert unknown == [
        "config: unknown key 'derp.server.enabeld' is ignored",
        "config: unknown key 'dns.magic_dsn' is ignored",
        "config: unknown key 'dns.nameservers.globl' is ignored",
        "config: unknown key 'surprise' is ignored",
    ]


# --- keys that used to be accepted and ignored -------------------------------------------------------------


def test_postgres_password_is_escaped_in_the_url(tmp_path: Path) -> None:
    secret = "p@ss:w/rd?#% "
    pg = build_config(
        {"database": {"type": "postgres", "postgres": {"host": "db.internal", "pass": secret}}},
        data_dir=tmp_path,
    ).database.postgres
    url = make_url(pg.url().render_as_string(hide_password=False))
    assert (url.password, url.host, url.port, url.database) == (secret, "db.internal", 5432, "headscale")
    assert secret not in repr(pg), "the password never shows in a repr"


@pytest.mark.parametrize(
    ("ssl", "mode"),
    [
        (False, "disable"),
        (True, "prefer"),
        ("false", "disable"),
        ("require", "require"),
        ("verify-full", "verify-full"),
    ],
)
def test_postgres_ssl_as_headscale_reads_it(ssl: object, mode: str, tmp_path: Path) -> None:
    pg = build_config({"database": {"postgres": {"ssl": ssl}}}, data_dir=tmp_path).database.postgres
    assert pg.sslmode == mode
    assert pg.url().query["ssl"] == mode


def test_postgres_bad_ssl_and_unix_socket_host(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"database\.postgres\.ssl: 'sometimes'"):
        build_config({"database": {"postgres": {"ssl": "sometimes"}}}, data_dir=tmp_path)
    pg = build_config(
        {"database": {"postgres": {"host": "/var/run/postgresql", "port": 5433}}}, data_dir=tmp_path
    ).database.postgres
    url = pg.url()
    assert url.host is None
    assert (url.query["host"], url.query["port"]) == ("/var/run/postgresql", "5433")


def test_postgres_pool_settings(tmp_path: Path) -> None:
    pg = build_config(
        {"database": {"postgres": {"max_open_conns": 5, "max_idle_conns": 2, "conn_max_idle_time_secs": 60}}},
        data_dir=tmp_path,
    ).database.postgres
    assert pg.engine_options() == {"pool_size": 2, "max_overflow": 3, "pool_recycle": 60}
    assert build_config({}, data_dir=tmp_path).database.postgres.engine_options() == {
        "pool_size": 10,
        "max_overflow": 0,
        "pool_recycle": 3600,
    }


def test_legacy_password_key_is_still_read(tmp_path: Path) -> None:
    pg = build_config({"database": {"postgres": {"password": "old"}}}, data_dir=tmp_path).database.postgres
    assert make_url(pg.url().render_as_string(hide_password=False)).password == "old"


def test_feature_sections_and_their_defaults(tmp_path: Path) -> None:
    config = build_config({}, data_dir=tmp_path)
    assert config.taildrop.enabled is True
    assert config.auto_update.enabled is False
    assert config.logtail.enabled is False
    assert config.oidc.pkce.enabled is False
    assert (config.cli.address, config.cli.timeout, config.cli.insecure) == ("", timedelta(seconds=5), False)
    changed = build_config(
        {
            "taildrop": {"enabled": False},
            "auto_update": {"enabled": True},
            "oidc": {"pkce": {"enabled": True}},
        },
        data_dir=tmp_path,
    )
    assert (changed.taildrop.enabled, changed.auto_update.enabled, changed.oidc.pkce.enabled) == (
        False,
        True,
        True,
    )


def test_extra_records_and_their_path_are_exclusive(tmp_path: Path) -> None:
    records = [{"name": "grafana.tailnet.internal", "type": "A", "value": "100.64.0.3"}]
    with pytest.raises(ConfigError, match=r"dns: .*mutually exclusive"):
        build_config(
            {"dns": {"extra_records": records, "extra_records_path": "/var/lib/headscale/records.json"}},
            data_dir=tmp_path,
        )
    config = build_config({"dns": {"extra_records_path": "records.json"}}, data_dir=tmp_path)
    assert config.dns.extra_records_path == "records.json"


def test_new_ephemeral_key_wins_over_the_deprecated_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "pyheadscale.config"):
        both = build_config(
            {"ephemeral_node_inactivity_timeout": "10m", "node": {"ephemeral": {"inactivity_timeout": "5m"}}},
            data_dir=tmp_path,
        )
    assert both.ephemeral_inactivity_timeout == timedelta(minutes=5)
    assert "'ephemeral_node_inactivity_timeout' is deprecated" in caplog.text
    old_only = build_config({"ephemeral_node_inactivity_timeout": "10m"}, data_dir=tmp_path)
    assert old_only.ephemeral_inactivity_timeout == timedelta(minutes=10)
    assert build_config({}, data_dir=tmp_path).ephemeral_inactivity_timeout == timedelta(seconds=120)


def test_node_expiry_is_not_for_tagged_nodes(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    node = build_config({"node": {"expiry": "180d"}}, data_dir=tmp_path).node
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert node.expiry_for(tagged=True, requested=None, at=at) is None
    assert node.expiry_for(tagged=False, requested=None, at=at) == at + timedelta(days=180)
    asked = at + timedelta(days=1)
    assert node.expiry_for(tagged=False, requested=asked, at=at) == asked
    never = build_config({}, data_dir=tmp_path).node
    assert never.expiry_for(tagged=False, requested=None, at=at) is None


def test_json_log_lines() -> None:
    record = logging.LogRecord(
        "pyheadscale.app", logging.WARNING, __file__, 1, "listening on %s", ("x",), None
    )
    line = json.loads(JSONLogFormatter().format(record))
    assert (line["level"], line["message"], line["logger"]) == ("warn", "listening on x", "pyheadscale.app")
    assert line["time"].endswith("+00:00")


def test_serve_logging_follows_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    configure_logging("warn", "json")
    (handler,) = root.handlers
    assert isinstance(handler.formatter, JSONLogFormatter) and root.level == logging.WARNING
    configure_logging("debug", "text")
    (handler,) = root.handlers
    assert not isinstance(handler.formatter, JSONLogFormatter) and root.level == logging.DEBUG


def test_log_format_is_validated(tmp_path: Path) -> None:
    assert build_config({"log": {"format": "json"}}, data_dir=tmp_path).log.format == "json"
    with pytest.raises(ConfigError, match=r"log\.format: 'xml' is not allowed"):
        build_config({"log": {"format": "xml"}}, data_dir=tmp_path)


def test_cli_section_gives_the_remote_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = write(tmp_path / "config.yaml", "cli:\n  address: hs.example:443\n  api_key: from-file\n")
    args = build_parser().parse_args(["-c", str(config_file), "users", "list"])
    remote_from_config(args)
    assert (args.address, args.api_key) == ("hs.example:443", "from-file")
    monkeypatch.setenv("HEADSCALE_CLI_API_KEY", "from-env")
    args = build_parser().parse_args(["-c", str(config_file), "users", "list"])
    remote_from_config(args)
    assert args.api_key == "from-env", "the environment wins over the file, as in Headscale"
    flagged = build_parser().parse_args(["-c", str(config_file), "--address", "other:1", "users", "list"])
    remote_from_config(flagged)
    assert flagged.address == "other:1", "a flag wins over both"


def test_cli_timeout_and_insecure_reach_the_client(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "config.yaml",
        "cli:\n  address: https://hs.example\n  api_key: k\n  timeout: 2s\n  insecure: true\n",
    )
    args = build_parser().parse_args(["-c", str(config_file), "users", "list"])
    remote_from_config(args)
    target = resolve_target(args)
    assert (target.base_url, target.timeout, target.insecure) == ("https://hs.example", 2.0, True)


# --- Headscale's own example file --------------------------------------------------------------------------


def headscale_example() -> Path:
    """config-example.yaml of Headscale v0.29.2, read from its Go module source (never copied here)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed: Headscale's config-example.yaml comes from its Go module")
    try:
        proc = subprocess.run(
            [go, "mod", "download", "-json", "github.com/juanfont/headscale@v0.29.2"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd="/",
        )
    except subprocess.TimeoutExpired:
        pytest.skip("go mod download of github.com/juanfont/headscale@v0.29.2 timed out")
    if proc.returncode != 0:
        pytest.skip(f"go mod download of github.com/juanfont/headscale@v0.29.2 failed: {proc.stderr[-500:]}")
    return Path(json.loads(proc.stdout)["Dir"]) / "config-example.yaml"


def test_headscale_example_config_unchanged_means_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = headscale_example()
    copy = tmp_path / "config.yaml"
    shutil.copyfile(example, copy)
    for name in list(__import__("os").environ):
        if name.startswith("HEADSCALE_"):
            monkeypatch.delenv(name)
    with caplog.at_level(logging.INFO, "pyheadscale"):
        config, _source = load_config(copy)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], "Headscale's own example has no unknown or removed key"
    # What Headscale v0.29.2 reads from this file (hscontrol/types/config.go).
    assert (config.server_url, config.listen_addr, config.metrics_listen_addr) == (
        "http://127.0.0.1:8080",
        "127.0.0.1:8080",
        "127.0.0.1:9090",
    )
    assert config.path(config.noise.private_key_path) == Path("/var/lib/headscale/noise_private.key")
    assert (config.prefixes.v4, config.prefixes.v6, config.prefixes.allocation) == (
        "100.64.0.0/10",
        "fd7a:115c:a1e0::/48",
        "sequential",
    )
    assert config.derp.server.enabled is False
    assert config.derp.urls == ["https://controlplane.tailscale.com/derpmap/default"]
    assert (config.derp.auto_update_enabled, config.derp.update_frequency) == (True, timedelta(hours=3))
    assert config.node.expiry == timedelta(0)
    assert config.ephemeral_inactivity_timeout == timedelta(minutes=30)
    assert config.database.type in ("sqlite", "sqlite3")
    assert config.path(config.database.sqlite.path) == Path("/var/lib/headscale/db.sqlite")
    assert config.database.sqlite.write_ahead_log is True
    assert config.acme_url == "https://acme-v02.api.letsencrypt.org/directory"
    assert (config.tls_letsencrypt_hostname, config.tls_cert_path, config.tls_key_path) == ("", "", "")
    assert config.tls_letsencrypt_challenge_type == "HTTP-01"
    assert config.path(config.tls_letsencrypt_cache_dir) == Path("/var/lib/headscale/cache")
    assert not config.tls_enabled
    assert (config.log.level, config.log.format) == ("info", "text")
    assert (config.policy.mode, config.policy.path) == ("file", "")
    assert config.unix_socket == "/var/run/headscale/headscale.sock"
    assert int(config.unix_socket_permission, 8) == 0o770
    assert (config.taildrop.enabled, config.auto_update.enabled, config.logtail.enabled) == (
        True,
        False,
        False,
    )
    assert config.oidc.enabled is False and config.oidc.pkce.enabled is False
    # The DNS configuration clients get, as Headscale's dnsToTailcfgDNS builds it from this file.
    dns = dns_config(config)
    assert dns["Proxied"] is True
    assert [r["Addr"] for r in dns["Resolvers"]] == [
        "1.1.1.1",
        "1.0.0.1",
        "2606:4700:4700::1111",
        "2606:4700:4700::1001",
    ]
    assert dns["Domains"] == ["example.com"]
    assert "ExtraRecords" not in dns and "Routes" not in dns
