"""One sequence of management calls, run against real Headscale (to record) and pyheadscale (to compare).

REST calls go through /api/v1 with an API key; CLI calls are `<program> ... -o json|json-line|yaml`. Answers
are normalized before comparing: times, generated keys and key prefixes become placeholders; error messages
(worded by each implementation) become `<message>`, their codes and HTTP statuses stay.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

AUTH_ID = "hskey-authreq-" + "A" * 24
POLICY = json.dumps(
    {
        "tagOwners": {"tag:server": ["alice@"]},
        "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
    }
)
BAD_POLICY = json.dumps({"acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}]})


@dataclass(frozen=True)
class Step:
    name: str
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class CliStep:
    name: str
    argv: tuple[str, ...]


AUTH_ID_UNKNOWN = "hskey-authreq-" + "C" * 24

SCENARIO: tuple[Step | CliStep, ...] = (
    Step("users-empty", "GET", "/user"),
    CliStep("users-empty-json", ("users", "list", "-o", "json")),
    Step(
        "user-create-alice",
        "POST",
        "/user",
        body={"name": "alice", "displayName": "Alice A", "email": "a@example.com"},
    ),
    Step("user-create-bob", "POST", "/user", body={"name": "bob"}),
    Step("users-by-name", "GET", "/user", params={"name": "bob"}),
    Step("users-by-id", "GET", "/user", params={"id": "1"}),
    Step("users-by-email", "GET", "/user", params={"email": "a@example.com"}),
    Step("user-rename", "POST", "/user/2/rename/robert"),
    Step("user-rename-missing", "POST", "/user/99/rename/zed"),
    Step("policy-set", "PUT", "/policy", body={"policy": POLICY}),
    Step("policy-set-bad", "PUT", "/policy", body={"policy": BAD_POLICY}),
    Step("policy-get", "GET", "/policy"),
    Step("policy-check-good", "POST", "/policy/check", body={"policy": POLICY}),
    Step("policy-check-bad", "POST", "/policy/check", body={"policy": BAD_POLICY}),
    Step(
        "preauthkey-create",
        "POST",
        "/preauthkey",
        body={"user": "1", "reusable": True, "expiration": "2099-01-01T00:00:00Z"},
    ),
    Step(
        "preauthkey-create-tagged",
        "POST",
        "/preauthkey",
        body={"aclTags": ["tag:server"], "expiration": "2099-01-01T00:00:00Z"},
    ),
    Step("preauthkeys", "GET", "/preauthkey"),
    Step("preauthkey-expire", "POST", "/preauthkey/expire", body={"id": "2"}),
    Step(
        "debug-node",
        "POST",
        "/debug/node",
        body={"user": "alice", "key": AUTH_ID, "name": "laptop"},
    ),
    Step("auth-register", "POST", "/auth/register", body={"user": "alice", "authId": AUTH_ID}),
    Step("node-expire-disable-first", "POST", "/node/1/expire", params={"disableExpiry": "true"}),
    Step("nodes", "GET", "/node"),
    Step("node-get", "GET", "/node/1"),
    Step("node-get-missing", "GET", "/node/99"),
    Step("node-get-not-a-number", "GET", "/node/abc"),
    Step("node-approve-routes", "POST", "/node/1/approve_routes", body={"routes": ["10.1.0.0/24"]}),
    Step("node-rename", "POST", "/node/1/rename/work-laptop"),
    Step("node-expire-at", "POST", "/node/1/expire", params={"expiry": "2099-01-01T00:00:00Z"}),
    CliStep("nodes-expiring-json", ("nodes", "list", "-o", "json")),
    Step("node-expire-disable", "POST", "/node/1/expire", params={"disableExpiry": "true"}),
    Step("node-tags", "POST", "/node/1/tags", body={"tags": ["tag:server"]}),
    Step("nodes-after", "GET", "/node"),
    Step("nodes-of-alice", "GET", "/node", params={"user": "alice"}),
    Step("node-backfill-unconfirmed", "POST", "/node/backfillips"),
    Step("node-backfill", "POST", "/node/backfillips", params={"confirmed": "true"}),
    Step("node-register-unknown", "POST", "/node/register", params={"user": "alice", "key": AUTH_ID_UNKNOWN}),
    Step("auth-approve-unknown", "POST", "/auth/approve", body={"authId": AUTH_ID_UNKNOWN}),
    Step("auth-reject-unknown", "POST", "/auth/reject", body={"authId": AUTH_ID_UNKNOWN}),
    Step("auth-approve-malformed", "POST", "/auth/approve", body={"authId": "nope"}),
    Step("apikey-create", "POST", "/apikey", body={"expiration": "2099-01-01T00:00:00Z"}),
    Step("apikeys", "GET", "/apikey"),
    Step("apikey-expire", "POST", "/apikey/expire", body={"id": "2"}),
    Step("apikey-expire-neither", "POST", "/apikey/expire", body={}),
    Step("apikey-delete-prefix-and-id", "DELETE", "/apikey/abcdefabcdef", params={"id": "2"}),
    Step("health", "GET", "/health"),
    CliStep("users-json", ("users", "list", "-o", "json")),
    CliStep("users-yaml", ("users", "list", "-o", "yaml")),
    CliStep("nodes-json", ("nodes", "list", "-o", "json")),
    CliStep("nodes-json-line", ("nodes", "list", "-o", "json-line")),
    CliStep("nodes-yaml", ("nodes", "list", "-o", "yaml")),
    CliStep("routes-json", ("nodes", "list-routes", "-o", "json")),
    CliStep("preauthkeys-json", ("preauthkeys", "list", "-o", "json")),
    CliStep("apikeys-json", ("apikeys", "list", "-o", "json")),
    CliStep("health-json", ("health", "-o", "json")),
    CliStep("policy-get", ("policy", "get")),
    CliStep("node-rename-json", ("nodes", "rename", "-i", "1", "desk", "-o", "json")),
    CliStep("node-expire-json", ("nodes", "expire", "-i", "1", "--disable", "-o", "yaml")),
    CliStep("user-create-json", ("users", "create", "carol", "-o", "json")),
    CliStep("preauthkey-create-json", ("preauthkeys", "create", "-u", "3", "-e", "24h", "-o", "json")),
    CliStep("preauthkey-expire-json", ("preauthkeys", "expire", "-i", "3", "-o", "json")),
    Step("preauthkey-delete", "DELETE", "/preauthkey", params={"id": "3"}),
    Step("preauthkey-delete-missing", "DELETE", "/preauthkey", params={"id": "99"}),
    CliStep("node-delete-json", ("nodes", "delete", "-i", "1", "--force", "-o", "json")),
    Step("node-delete-missing", "DELETE", "/node/1"),
    Step("user-delete", "DELETE", "/user/3"),
    Step("user-delete-missing", "DELETE", "/user/99"),
    Step("nodes-empty", "GET", "/node"),
    CliStep("nodes-empty-json", ("nodes", "list", "-o", "json")),
    CliStep("nodes-empty-yaml", ("nodes", "list", "-o", "yaml")),
    CliStep("user-destroy-json", ("users", "destroy", "-i", "2", "--force", "-o", "json")),
)
REST_STEPS = tuple(step for step in SCENARIO if isinstance(step, Step))
CLI_STEPS = tuple(step for step in SCENARIO if isinstance(step, CliStep))

Call = Callable[[Step], Awaitable[tuple[int, Any]]]
RunCli = Callable[[tuple[str, ...]], Awaitable[str]]

_PATTERNS = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"), "<time>"),
    (re.compile(r"(mkey|nodekey|discokey):[0-9a-f]{64}"), r"\1:<hex>"),
    # Key text: Headscale's alphabet is URL-safe base64, ours hex; both are opaque to their users.
    (re.compile(r"hskey-(auth|api)-[A-Za-z0-9_-]{12}-\*\*\*"), r"hskey-\1-<prefix>-***"),
    (re.compile(r"hskey-(auth|api)-[A-Za-z0-9_-]{12}-[A-Za-z0-9_-]{64}"), r"hskey-\1-<secret>"),
    (re.compile(r'("?(?:seconds|nanos)"?: ?)\d+'), r"\g<1>0"),
)


def normalize_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def normalize(status: int, body: Any) -> dict[str, Any]:
    """One REST answer in comparable form."""
    if isinstance(body, dict) and status != 200 and set(body) == {"code", "message", "details"}:
        body = {**body, "message": "<message>"}
    return {"status": status, "body": json.loads(normalize_text(json.dumps(body)))}


async def run(call: Call, cli: RunCli) -> tuple[dict[str, Any], dict[str, str]]:
    """Play the scenario in order; the normalized REST answers and CLI outputs, by step name."""
    rest: dict[str, Any] = {}
    outputs: dict[str, str] = {}
    for step in SCENARIO:
        if isinstance(step, Step):
            rest[step.name] = normalize(*await call(step))
        else:
            outputs[step.name] = normalize_text(await cli(step.argv))
    return rest, outputs
