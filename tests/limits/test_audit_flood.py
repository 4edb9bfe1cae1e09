"""Issue 8 point 6: a stranger's refused requests cannot grow the audit log without bound."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pyheadscale.audit import AuditLog
from pyheadscale.config_limits import AuditLimits, RateConfig
from pyheadscale.tailkey import NodePrivate
from tests.live_server import LiveServer


def test_attacker_fields_are_clipped() -> None:
    log = AuditLog(None, AuditLimits(field_length=64))
    log.record(
        "node.register", "machine:x" * 1000, "denied", hostname="h" * 1_000_000, tags=["t" * 500] * 500
    )
    entry = log.entries[-1]
    assert len(json.dumps(entry)) < 10_000
    assert entry["hostname"].startswith("h" * 64) and "(+999936 chars)" in entry["hostname"]
    assert len(entry["tags"]) == 65 and entry["tags"][-1] == "...(+436 items)"


def test_memory_window_is_bounded_in_bytes() -> None:
    log = AuditLog(None, AuditLimits(field_length=4096, memory_bytes=64 << 10))
    for i in range(2000):
        log.record("node.register", f"machine:{i}", "denied", hostname="x" * 4000)
    assert log.memory_bytes <= 64 << 10
    assert sum(len(json.dumps(e, default=str)) for e in log.entries) <= 64 << 10
    assert log.entries[-1]["target"] == "machine:1999"


async def test_audit_file_rotates_at_its_cap(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, AuditLimits(field_length=1024, file_max_bytes=64 << 10, file_backups=2))
    await log.start()
    for i in range(600):
        log.record("node.register", f"machine:{i}", "denied", hostname="x" * 1000)
    await log.close()
    check_rotated(tmp_path)


def check_rotated(directory: Path) -> None:
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    assert all((directory / name).stat().st_size <= 64 << 10 for name in files)
    assert all((directory / name).stat().st_mode & 0o077 == 0 for name in files)
    last = (directory / "audit.log").read_text().splitlines()[-1]
    assert json.loads(last)["target"] == "machine:599"


def test_unauthenticated_refusals_are_rate_limited_per_source() -> None:
    suppressed: list[int] = []
    log = AuditLog(
        None, refusals=RateConfig(per_second=0.001, burst=5), on_suppressed=lambda: suppressed.append(1)
    )
    written = [log.record_refusal("192.0.2.7", "api.authenticate", "api:GET /x") for _ in range(100)]
    assert written.count(True) == 5 and len(suppressed) == 95
    # Another source has its own allowance; an IPv6 /64 is one source.
    assert log.record_refusal("2001:db8::1", "api.authenticate", "api:GET /x")
    assert log.record_refusal("2001:db8::2", "api.authenticate", "api:GET /x")
    assert log.entries[-1]["source"] == "2001:db8::/64"


async def test_refused_registrations_flood(start_live: object, caplog: pytest.LogCaptureFixture) -> None:
    """Bad-key registrations with the longest Hostname allowed: audit entries bounded, log lines clipped."""
    live: LiveServer = await start_live(  # type: ignore[operator]
        limits={
            "rate": {
                "audit_refusals": {"per_second": 0.001, "burst": 10},
                "registrations": {"per_second": 1000, "burst": 1000},
            }
        }
    )
    client = await live.client()
    caplog.set_level(logging.INFO)
    for _ in range(60):
        answer = await client.register(
            NodePrivate.generate(), auth_key="hskey-auth-000000000000-" + "0" * 64, hostname="h" * 256
        )
        assert answer["Error"]
    denied = [e for e in live.server.audit.entries if e["outcome"] == "denied"]
    assert len(denied) == 10
    suppressed = live.server.metrics.registry.get_sample_value("pyheadscale_audit_suppressed_total")
    assert suppressed == 50
    assert all(len(r.getMessage()) < 400 for r in caplog.records)
