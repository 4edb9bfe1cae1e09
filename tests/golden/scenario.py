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


REST_STEPS = (
    Step("users-empty", "GET", "/user"),
    Step(
        "user-create-alice",
        "POST",
        "/user",
        body={"name": "alice", "displayName": "Alice A", "email": "a@example.com"},
    ),
    Step("user-create-bob", "POST", "/user", body={"name": "bob"}),
    Step("users-by-name", "GET", "/user", params={"name": "bob"}),
    Step("user-rename", "POST", "/user/2/rename/robert"),
    Step("user-rename-missing", "POST", "/user/99/rename/zed"),
    Step("policy-set", "PUT", "/policy", body={"policy": POLICY}),
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
    Step("node-expire-disable", "POST", "/node/1/expire", params={"disableExpiry": "true"}),
    Step("node-tags", "POST", "/node/1/tags", body={"tags": ["tag:server"]}),
    Step("nodes-after", "GET", "/node"),
    Step("nodes-of-alice", "GET", "/node", params={"user": "alice"}),
    Step("apikey-create", "POST", "/apikey", body={"expiration": "2099-01-01T00:00:00Z"}),
    Step("apikeys", "GET", "/apikey"),
    Step("apikey-expire", "POST", "/apikey/expire", body={"id": "2"}),
    Step("apikey-expire-neither", "POST", "/apikey/expire", body={}),
    Step("health", "GET", "/health"),
    Step("user-delete-missing", "DELETE", "/user/99"),
)

CLI_STEPS = (
    ("users-json", ("users", "list", "-o", "json")),
    ("users-yaml", ("users", "list", "-o", "yaml")),
    ("nodes-json", ("nodes", "list", "-o", "json")),
    ("nodes-json-line", ("nodes", "list", "-o", "json-line")),
    ("nodes-yaml", ("nodes", "list", "-o", "yaml")),
    ("routes-json", ("nodes", "list-routes", "-o", "json")),
    ("preauthkeys-json", ("preauthkeys", "list", "-o", "json")),
    ("apikeys-json", ("apikeys", "list", "-o", "json")),
    ("health-json", ("health", "-o", "json")),
    ("policy-get", ("policy", "get")),
)

Call = Callable[[Step], Awaitable[tuple[int, Any]]]

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


async def run_rest(call: Call) -> dict[str, Any]:
    return {step.name: normalize(*await call(step)) for step in REST_STEPS}
