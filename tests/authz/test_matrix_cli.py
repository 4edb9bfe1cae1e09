"""The authorization matrix, CLI half: every verb of `pyheadscale` x every way an operator can call it.

Management verbs talk to the server's REST API: over the unix socket (trusted by its file mode) or with
`--address` and an API key. Both succeed; an expired or deleted API key, or none, is refused with a clear
error and changes nothing. Server-side verbs (`configtest`, `policy check`, ...) never contact the server.
The verbs are read off the CLI's own parser, so a new verb fails `test_every_verb_is_in_the_matrix` until
it is given a row here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyheadscale.auth.interactive import AUTH_ID_PREFIX
from pyheadscale.cli.main import build_parser
from pyheadscale.tailkey import MachinePrivate, NodePrivate
from tests.cli.conftest import RunCli
from tests.live_server import LiveServer, StartLive


def cli_verbs() -> set[str]:
    """Every leaf verb of the CLI, by its canonical name ("nodes expire")."""
    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.add(" ".join(prefix))
            return
        for action in subs:
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases map to the same parser; the first name is canonical
                    seen.add(id(sub))
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return found


class World:
    """What the verbs' arguments name, created on the live server before each call."""

    def __init__(self, live: LiveServer, tmp_path: Path) -> None:
        self.live = live
        self.tmp_path = tmp_path
        self.v: dict[str, str] = {}

    async def build(self) -> World:
        store, logins = self.live.store, self.live.server.logins
        alice = await store.create_user("alice")
        bob = await store.create_user("bob")
        node = await self.live.add_node("laptop", user_id=alice.id)
        spare = await self.live.add_node("spare", user_id=alice.id)
        key, _ = await store.create_preauth_key(alice.id)
        api_key, _ = await store.create_api_key(None)
        waiting = logins.start(
            MachinePrivate.generate().public().text,
            NodePrivate.generate().public().text,
            {"Hostname": "newcomer"},
        )
        returning = logins.start(spare.machine_key, spare.node_key, {"Hostname": "spare"})
        policy = self.tmp_path / "policy.hujson"
        policy.write_text('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}\n')
        self.v = {
            "alice": str(alice.id),
            "bob": str(bob.id),
            "node": str(node.id),
            "spare": str(spare.id),
            "key": str(key.id),
            "api_prefix": api_key.prefix,
            "waiting": waiting.auth_id,
            "returning": returning.auth_id,
            "policy": str(policy),
            "debug_id": AUTH_ID_PREFIX + "0123456789abcdef01234567",
        }
        return self

    def state(self) -> Any:
        store = self.live.store
        return (
            sorted((u.id, u.name) for u in store.users.values()),
            sorted((n.id, n.given_name, n.expiry, tuple(n.tags), n.user_id) for n in store.nodes.values()),
            sorted((k.id, k.expiration) for k in store.preauth_keys.values()),
            sorted((k.id, k.expiration) for k in store.api_keys.values()),
            sorted(p.auth_id for p in self.live.server.logins.list()),
        )


# Management verbs: the arguments of a call that succeeds on a World.
MANAGEMENT: dict[str, Callable[[dict[str, str]], list[str]]] = {
    "users create": lambda v: ["users", "create", "carol"],
    "users list": lambda v: ["users", "list"],
    "users rename": lambda v: ["users", "rename", "-i", v["bob"], "-r", "robert"],
    "users destroy": lambda v: ["--force", "users", "destroy", "-i", v["bob"]],
    "nodes list": lambda v: ["nodes", "list"],
    "nodes list-routes": lambda v: ["nodes", "list-routes"],
    "nodes delete": lambda v: ["--force", "nodes", "delete", "-i", v["spare"]],
    "nodes backfillips": lambda v: ["--force", "nodes", "backfillips"],
    "nodes expire": lambda v: ["nodes", "expire", "-i", v["node"]],
    "nodes rename": lambda v: ["nodes", "rename", "-i", v["node"], "work-laptop"],
    "nodes move": lambda v: ["nodes", "move", "-i", v["node"], "-u", v["bob"]],
    "nodes tag": lambda v: ["nodes", "tag", "-i", v["node"], "-t", "tag:server"],
    "nodes approve-routes": lambda v: ["nodes", "approve-routes", "-i", v["node"], "-r", "10.0.0.0/8"],
    "nodes register": lambda v: ["nodes", "register", "-u", "alice", "-k", v["waiting"]],
    "preauthkeys create": lambda v: ["preauthkeys", "create", "-u", v["alice"]],
    "preauthkeys list": lambda v: ["preauthkeys", "list"],
    "preauthkeys expire": lambda v: ["preauthkeys", "expire", "-i", v["key"]],
    "preauthkeys delete": lambda v: ["preauthkeys", "delete", "-i", v["key"]],
    "apikeys create": lambda v: ["apikeys", "create"],
    "apikeys list": lambda v: ["apikeys", "list"],
    "apikeys expire": lambda v: ["apikeys", "expire", "-p", v["api_prefix"]],
    "apikeys delete": lambda v: ["apikeys", "delete", "-p", v["api_prefix"]],
    "auth register": lambda v: ["auth", "register", "--auth-id", v["waiting"], "-u", "alice"],
    "auth approve": lambda v: ["auth", "approve", "--auth-id", v["returning"]],
    "auth reject": lambda v: ["auth", "reject", "--auth-id", v["waiting"]],
    "auth list": lambda v: ["auth", "list"],
    "policy get": lambda v: ["policy", "get"],
    "policy set": lambda v: ["policy", "set", "-f", v["policy"]],
    "debug create-node": lambda v: [
        "debug",
        "create-node",
        "--name",
        "n",
        "-u",
        "alice",
        "-k",
        v["debug_id"],
    ],
    "health": lambda v: ["health"],
}

# Server-side verbs: they read local files only. `serve` runs the server itself (it is what the others
# reach); it is exercised by every live-server test.
LOCAL: dict[str, Callable[[dict[str, str]], list[str]]] = {
    "configtest": lambda v: ["configtest"],
    "version": lambda v: ["version"],
    "generate private-key": lambda v: ["generate", "private-key"],
    "policy check": lambda v: ["policy", "check", v["policy"]],
    "policy simulate": lambda v: ["policy", "simulate", *v["cases"].split("\n")],
    "dump-config": lambda v: ["dump-config"],
    "completion": lambda v: ["completion", "bash"],
}
NOT_CALLED = {"serve"}
SIMULATE_CASE = {
    "id": "authz-1",
    "users": [{"id": 1, "name": "alice"}],
    "nodes": [
        {"hostname": "a", "user": "alice", "tags": [], "ipv4": "100.64.0.1", "ipv6": "fd7a:115c:a1e0::1"},
        {"hostname": "b", "user": "alice", "tags": [], "ipv4": "100.64.0.2", "ipv6": "fd7a:115c:a1e0::2"},
    ],
    "policy": '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}',
}

ALLOWED = ("unix-socket", "valid-api-key")
REFUSED = ("expired-api-key", "deleted-api-key", "no-api-key")


def test_every_verb_is_in_the_matrix() -> None:
    assert cli_verbs() == set(MANAGEMENT) | set(LOCAL) | NOT_CALLED


async def caller_args(live: LiveServer, caller: str) -> list[str]:
    """The global flags that make the CLI call as `caller`."""
    if caller == "unix-socket":
        return []
    store = live.store
    key, text = await store.create_api_key(None)
    if caller == "expired-api-key":
        await store.expire_api_key(key.id)
    elif caller == "deleted-api-key":
        await store.delete_api_key(key.id)
    elif caller == "no-api-key":
        return ["--address", live.url]
    return ["--address", live.url, "--api-key", text]


@pytest.fixture
async def live(start_live: StartLive) -> LiveServer:
    """The CLI tests' live server, with the policy in the database so that `policy set` can succeed."""
    return await start_live(policy={"mode": "database"})


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEADSCALE_CLI_API_KEY", raising=False)
    monkeypatch.delenv("HEADSCALE_CLI_ADDRESS", raising=False)


@pytest.mark.parametrize("caller", ALLOWED)
@pytest.mark.parametrize("verb", sorted(MANAGEMENT))
async def test_management_verb_allowed(
    cli: RunCli, live: LiveServer, tmp_path: Path, verb: str, caller: str
) -> None:
    world = await World(live, tmp_path).build()
    result = await cli(*await caller_args(live, caller), *MANAGEMENT[verb](world.v))
    assert result.code == 0, (result.out, result.err)


@pytest.mark.parametrize("verb", sorted(MANAGEMENT))
async def test_management_verb_refused_without_a_valid_key(
    cli: RunCli, live: LiveServer, tmp_path: Path, verb: str
) -> None:
    world = await World(live, tmp_path).build()
    for caller in REFUSED:
        flags = await caller_args(live, caller)
        before = world.state()
        result = await cli(*flags, *MANAGEMENT[verb](world.v))
        assert result.code == 1, (caller, result.out, result.err)
        expected = "needs an API key" if caller == "no-api-key" else "invalid or expired API key"
        assert expected in result.err, (caller, result.err)
        assert world.state() == before, caller


@pytest.mark.parametrize("verb", sorted(LOCAL))
async def test_local_verbs_never_contact_the_server(
    cli: RunCli, live: LiveServer, tmp_path: Path, verb: str
) -> None:
    world = await World(live, tmp_path).build()
    case = tmp_path / "case.json"
    case.write_text(json.dumps(SIMULATE_CASE))
    world.v["cases"] = str(case)
    denials = len(live.store.audit.query(action="api.authenticate"))
    before = world.state()
    bogus = ["--address", live.url, "--api-key", "hskey-api-000000000000-" + "0" * 64]
    result = await cli(*bogus, *LOCAL[verb](world.v))
    assert result.code == 0, (result.out, result.err)
    assert len(live.store.audit.query(action="api.authenticate")) == denials
    assert world.state() == before
