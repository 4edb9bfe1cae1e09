"""Switching from Headscale with real parts: real Headscale v0.29.2 registers real tsnet clients, stops, and
pyheadscale starts on the same config file, database and noise key.

Headscale runs as `headscale -c config.yaml serve` on SQLite or on a PostgreSQL server started inside the
namespace. Its own CLI makes two users, a reusable preauth key for alice, a reusable key tagged `tag:server`,
an API key and a database-mode policy; two tsnet nodes join (one tagged, with an approved route) and exchange
HTTP. Headscale is stopped (SIGTERM) and `python -m pyheadscale -c config.yaml serve` is started on the very
same files. Checked: the database was taken over (and backed up), every node kept its id, keys, addresses,
tags and routes; both clients come back online by themselves with no new login and HTTP between them works
again; the Headscale-made API key reads the REST API; a third client joins with the Headscale-made reusable
key.

With `--record DIR` what Headscale made (its SQLite database, or a pg_dump of its PostgreSQL one), the key
texts, its node listing and the policy are saved to DIR before pyheadscale starts; tests/db reads them without
Go. The fixtures were recorded so, with `--tailscale <tailscaled> <tailscale>` (v1.90.9):
    fixtures/headscale-v0.29.2           --headscale <refbin headscale> --db sqlite
    fixtures/headscale-v0.29.2-postgres  --headscale <refbin headscale> --db postgres
    fixtures/headscale-v0.26.1           --headscale <go install .../cmd/headscale@v0.26.1 into a temp GOBIN>
Before v0.28 Headscale keeps preauth keys in clear and makes `<prefix>.<secret>` API keys: that fixture holds
those forms.

Runs inside a private namespace (see netns.py); prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable by hand, without PYTHONPATH

from tests.db.pgserver import pg_bin, throwaway_postgres
from tests.e2e.caddynode import CaddyNode, proxy_site, responder_site
from tests.e2e.netns import setup_loopback_only
from tests.e2e.policy_login_driver import BODY, fetch_until
from tests.e2e.tsd_node import TailscaledNode
from tests.headscale_config import headscale_config
from tests.ports import free_port
from tests.processes import stop_process

ROUTE = "10.99.0.0/24"
"""Approved for the tagged tsnet node, which does not announce it."""
SUBNET = "10.98.0.0/24"
"""Announced by the tailscaled node and approved: a subnet route it serves."""
POLICY = {
    "tagOwners": {"tag:server": ["alice@"]},
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}


class Process:
    """A server process (Headscale or pyheadscale) logging to a file, healthy when /health answers 200."""

    def __init__(self, name: str, argv: list[str], workdir: Path, url: str) -> None:
        self.name, self.argv, self.url = name, argv, url
        self.log_path = workdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(*self.argv, stdout=log, stderr=log)
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/health") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy: {self.log_tail()}")

    async def stop(self) -> None:
        await stop_process(self.proc, 30)

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""


async def run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode()[-2000:]}")
    return out.decode()


async def headscale_nodes(headscale: str, config: Path) -> dict[str, dict[str, Any]]:
    """Headscale's own view of its nodes, by hostname (`headscale nodes list -o json`)."""
    listed = json.loads(await run(headscale, "-c", str(config), "nodes", "list", "-o", "json"))
    return {n["name"]: n for n in listed or []}  # no nodes: `null`


async def wait_for(predicate: Any, seconds: float, what: str) -> Any:
    for _ in range(int(seconds * 5)):
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def snapshot(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What must not change across the switch, per hostname (from pyheadscale's REST API or Headscale's CLI:
    both name these fields alike in lowerCamelCase or snake_case; we read either)."""

    def get(node: dict[str, Any], *names: str) -> Any:
        return next((node[n] for n in names if n in node), None)

    return {
        n["name"]: {
            "id": str(n["id"]),
            "machine_key": get(n, "machineKey", "machine_key"),
            "node_key": get(n, "nodeKey", "node_key"),
            "ips": sorted(get(n, "ipAddresses", "ip_addresses") or []),
            "tags": sorted(get(n, "tags", "forced_tags") or []),
            "approved_routes": sorted(get(n, "approvedRoutes", "approved_routes") or []),
            "announced_routes": sorted(get(n, "availableRoutes", "available_routes") or []),
            "serving_routes": sorted(get(n, "subnetRoutes", "subnet_routes") or []),
        }
        for n in rows
    }


async def main(
    workdir: Path, db_kind: str, record: Path | None, headscale: str, tailscale_pair: list[str] | None
) -> dict[str, Any]:
    setup_loopback_only()
    result: dict[str, Any] = {"ok": False}
    async with contextlib.AsyncExitStack() as stack:
        if db_kind == "postgres":
            pg = stack.enter_context(throwaway_postgres(auth="trust"))
            database: dict[str, Any] = {
                "type": "postgres",
                "postgres": {"host": pg["host"], "port": pg["port"], "name": pg["name"], "user": pg["user"]}
                | {"pass": pg["password"], "max_open_conns": 10, "max_idle_conns": 10},
            }
        else:
            database = {
                "type": "sqlite",
                "sqlite": {"path": str(workdir / "db.sqlite"), "write_ahead_log": True},
            }
        port, stun_port, proxy_port = free_port(), free_port(), free_port()
        url = f"http://127.0.0.1:{port}"
        config = workdir / "config.yaml"
        raw = headscale_config(
            workdir,
            server_url=f"http://127.0.0.1:{port}",
            listen_addr=f"127.0.0.1:{port}",
            metrics_listen_addr=f"127.0.0.1:{free_port()}",
            grpc_listen_addr=f"127.0.0.1:{free_port()}",
            stun_listen_addr=f"127.0.0.1:{stun_port}",
            database=database,
        )
        config.write_text(yaml.safe_dump(raw))
        hs = Process("headscale", [headscale, "-c", str(config), "serve"], workdir, url)
        ours = Process(
            "pyheadscale", [sys.executable, "-m", "pyheadscale", "-c", str(config), "serve"], workdir, url
        )
        nodes: list[CaddyNode] = []
        tailscaled = TailscaledNode(workdir, "nodet", *map(Path, tailscale_pair)) if tailscale_pair else None
        expected = {"nodea", "nodeb", *(["nodet"] if tailscaled else [])}
        try:
            await hs.start()
            hsctl = (headscale, "-c", str(config))
            await run(*hsctl, "users", "create", "alice", "-d", "Alice Example", "-e", "alice@example.com")
            await run(*hsctl, "users", "create", "bob")
            policy_file = workdir / "policy.json"
            policy_file.write_text(json.dumps(POLICY))
            await run(*hsctl, "policy", "set", "-f", str(policy_file))
            user_key = json.loads(
                await run(
                    *hsctl, "preauthkeys", "create", "-u", "1", "--reusable", "-e", "720h", "-o", "json"
                )
            )["key"]
            tag_args = ["--tags", "tag:server", "--reusable", "-e", "720h", "-o", "json"]
            try:
                tag_key = json.loads(await run(*hsctl, "preauthkeys", "create", *tag_args))["key"]
            except RuntimeError:  # before v0.28 a key names its user (its tags become the node's forced tags)
                tag_key = json.loads(await run(*hsctl, "preauthkeys", "create", "-u", "1", *tag_args))["key"]
            api_key = json.loads(await run(*hsctl, "apikeys", "create", "-e", "720h", "-o", "json"))
            result["key_forms"] = [user_key[:11], api_key[:10]]

            node_a = CaddyNode(
                workdir,
                "nodea",
                url,
                user_key,
                responder_site("nodea", BODY),
            )
            nodes.append(node_a)
            await node_a.start()
            listed = await wait_for(
                lambda: _with(headscale_nodes(headscale, config), "nodea"),
                120,
                "nodea to register with Headscale",
            )
            a_ip = next(ip for ip in snapshot([listed["nodea"]])["nodea"]["ips"] if ":" not in ip)
            node_b = CaddyNode(
                workdir,
                "nodeb",
                url,
                tag_key,
                proxy_site("nodeb", proxy_port, a_ip),
            )
            nodes.append(node_b)
            await node_b.start()
            # nodeb's tsnet comes up with the first request through its proxy.
            status, _ = await fetch_until(proxy_port, True, 120)
            result["before"] = status
            listed = await headscale_nodes(headscale, config)
            await run(*hsctl, "nodes", "approve-routes", "-i", str(listed["nodeb"]["id"]), "-r", ROUTE)
            if tailscaled is not None:
                await tailscaled.start()
                await tailscaled.cli(
                    *("up", f"--login-server={url}", f"--authkey={user_key}", "--hostname=nodet"),
                    *(f"--advertise-routes={SUBNET}", "--timeout=120s"),
                    limit=150,
                )
                listed = await wait_for(
                    lambda: _with(headscale_nodes(headscale, config), "nodet"), 60, "nodet in Headscale"
                )
                await run(*hsctl, "nodes", "approve-routes", "-i", str(listed["nodet"]["id"]), "-r", SUBNET)
                result["nodet_ping_before"] = await tailscaled.pings(a_ip)
            before = snapshot(list((await headscale_nodes(headscale, config)).values()))
            result["headscale_nodes"] = before
            await hs.stop()
            if record is not None:
                keys = {"preauth_key_alice": user_key, "preauth_key_tag_server": tag_key, "api_key": api_key}
                dump = await pg_dump(database["postgres"]) if db_kind == "postgres" else None
                _record(record, workdir, dump, keys, before)

            await ours.start()
            result["takeover_logged"] = "took over a Headscale v0." in ours.log_tail(100_000)
            result["backup"] = backup_releases(workdir) if db_kind == "sqlite" else "schema"
            auth = {"Authorization": f"Bearer {api_key}"}
            async with aiohttp.ClientSession(headers=auth) as http:

                async def api_nodes() -> list[dict[str, Any]]:
                    async with http.get(f"{url}/api/v1/node") as resp:
                        result["api_status"] = resp.status
                        return list((await resp.json())["nodes"]) if resp.status == 200 else []

                async with http.get(f"{url}/api/v1/policy") as resp:
                    result["policy_carried_over"] = json.loads((await resp.json())["policy"]) == POLICY
                after = snapshot(await api_nodes())
                result["after_nodes_same"] = after == before
                if after != before:
                    result["after_nodes"] = after

                async def all_online() -> bool:
                    rows = await api_nodes()
                    result["online_after"] = {n["name"]: n["online"] for n in rows}
                    return {n["name"] for n in rows} == expected and all(n["online"] for n in rows)

                await wait_for(all_online, 180, "both clients to reconnect to pyheadscale")
                status, seconds = await fetch_until(proxy_port, True, 120)
                result["after"] = {"status": status, "seconds": seconds}
                if tailscaled is not None:
                    result["nodet_ping_after"] = await tailscaled.pings(a_ip)

                node_c = CaddyNode(
                    workdir, "nodec", url, user_key, ':80 {\n  bind tailscale/nodec\n  respond "c"\n}\n'
                )
                nodes.append(node_c)
                await node_c.start()

                async def nodec_joined() -> bool:
                    rows = {n["name"]: n for n in await api_nodes()}
                    return "nodec" in rows and bool(rows["nodec"]["online"])

                await wait_for(nodec_joined, 180, "nodec to join pyheadscale with Headscale's reusable key")
                result["nodec_joined"] = True
                result["node_count"] = len(await api_nodes())
            result["ok"] = True
        except Exception as exc:  # reported in the JSON line, with the logs
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for caddy in nodes:
                await caddy.stop()
            if tailscaled is not None:
                await tailscaled.stop()
            await hs.stop()
            await ours.stop()
            if not result.get("ok"):
                result["logs"] = {caddy.name: caddy.log_tail() for caddy in nodes}
                if tailscaled is not None:
                    result["logs"]["nodet"] = tailscaled.log_tail()
                result["headscale_log"] = hs.log_tail()
                result["pyheadscale_log"] = ours.log_tail()
    return result


def backup_releases(workdir: Path) -> list[str]:
    """The release in the name of each SQLite backup pyheadscale made (`db.sqlite.headscale-<release>-…`)."""
    names = [p.name for p in workdir.iterdir() if p.name.startswith("db.sqlite.headscale-")]
    return sorted(name.removeprefix("db.sqlite.headscale-").rsplit("-", 1)[0] for name in names)


async def _with(listing: Any, name: str) -> dict[str, dict[str, Any]] | None:
    nodes = await listing
    return nodes if name in nodes else None


async def pg_dump(pg: dict[str, Any]) -> str:
    """Headscale's PostgreSQL database as SQL (plain INSERTs, so any client can load it)."""
    return await run(
        str(pg_bin("pg_dump")),
        *("-h", pg["host"], "-p", str(pg["port"]), "-U", pg["user"], pg["name"]),
        *("--inserts", "--no-owner", "--no-privileges"),
    )


def _record(
    target: Path, workdir: Path, pg_dump: str | None, keys: dict[str, str], nodes: dict[str, Any]
) -> None:
    """Save what Headscale made: its database (SQLite: one checkpointed file; PostgreSQL: `pg_dump`'s SQL),
    the key texts, its nodes as its CLI listed them and the policy."""
    target.mkdir(parents=True, exist_ok=True)
    if pg_dump is None:
        with sqlite3.connect(workdir / "db.sqlite") as source:
            copy = sqlite3.connect(target / "db.sqlite")
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            copy.close()
    else:
        (target / "dump.sql").write_text(pg_dump)
    (target / "keys.json").write_text(json.dumps(keys, indent=2) + "\n")
    (target / "nodes.json").write_text(json.dumps(nodes, indent=2, sort_keys=True) + "\n")
    (target / "policy.json").write_text(json.dumps(POLICY, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--headscale", required=True)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--record", type=Path)
    parser.add_argument(
        "--tailscale", nargs=2, metavar=("TAILSCALED", "TAILSCALE"), help="add a tailscaled node"
    )
    parser.add_argument("--keep", type=Path, help="work in this directory and leave it (for debugging)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(asyncio.run(main(workdir, args.db, args.record, args.headscale, args.tailscale))))
