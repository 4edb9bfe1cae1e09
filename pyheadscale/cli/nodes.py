"""`nodes`: list, list-routes, delete, expire, rename, move, tag, approve-routes, register."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from pyheadscale import keys
from pyheadscale.cli.client import ApiClient, CliError, api_command
from pyheadscale.cli.output import add_output_flags, confirm, emit, is_past, joined, split_list, table, when
from pyheadscale.cli.users import find_user

NODE_HEADER = [
    "ID",
    "Hostname",
    "Name",
    "MachineKey",
    "NodeKey",
    "User",
    "Tags",
    "IP addresses",
    "Ephemeral",
    "Last seen",
    "Expiration",
    "Connected",
    "Expired",
]
ROUTES_HEADER = ["ID", "Hostname", "Approved", "Available", "Serving (Primary)"]


def node_row(node: dict[str, Any]) -> list[str]:
    key = node.get("pre_auth_key") or {}
    return [
        node["id"],
        node["name"],
        node["given_name"],
        keys.short(node["machine_key"]),
        keys.short(node["node_key"]),
        (node.get("user") or {}).get("name", ""),
        joined(node["tags"]),
        joined(node["ip_addresses"]),
        str(bool(key.get("ephemeral"))).lower(),
        when(node["last_seen"]),
        when(node["expiry"], empty="N/A"),
        "online" if node["online"] else "offline",
        "yes" if is_past(node["expiry"]) else "no",
    ]


def _route_row(node: dict[str, Any]) -> list[str]:
    return [
        node["id"],
        node["given_name"],
        joined(node["approved_routes"]),
        joined(node["available_routes"]),
        joined(node["subnet_routes"]),
    ]


def _node_path(args: argparse.Namespace, suffix: str = "") -> str:
    if args.identifier is None:
        raise CliError("which node? give --identifier ID")
    if args.identifier <= 0:
        raise CliError("--identifier must be a positive node id")
    return f"/node/{args.identifier}{suffix}"


def _show_node(args: argparse.Namespace, result: dict[str, Any], done: str) -> None:
    emit(args, result["node"], lambda: f"{done}\n{table(NODE_HEADER, [node_row(result['node'])])}")


async def _list(client: ApiClient, args: argparse.Namespace) -> None:
    params = {"user": args.user} if args.user else None
    nodes = (await client.get("/node", params))["nodes"]
    emit(args, nodes, lambda: table(NODE_HEADER, [node_row(n) for n in nodes]))


async def _list_routes(client: ApiClient, args: argparse.Namespace) -> None:
    if args.identifier is not None:
        nodes = [(await client.get(_node_path(args)))["node"]]
    else:
        nodes = [
            n for n in (await client.get("/node"))["nodes"] if n["approved_routes"] or n["available_routes"]
        ]
    emit(args, nodes, lambda: table(ROUTES_HEADER, [_route_row(n) for n in nodes]))


async def _delete(client: ApiClient, args: argparse.Namespace) -> None:
    node = (await client.get(_node_path(args)))["node"]
    if not await confirm(args, f"Do you want to delete the node {node['given_name']!r} (id {node['id']})?"):
        raise CliError("not confirmed; nothing deleted (pass --force to skip the question)")
    result = await client.delete(_node_path(args))
    emit(args, result, lambda: f"Node {node['given_name']} deleted")


async def _backfill_ips(client: ApiClient, args: argparse.Namespace) -> None:
    question = (
        "Give every node an address in each configured family it lacks? Connected nodes will re-read maps."
    )
    if not await confirm(args, question):
        raise CliError("not confirmed; nothing changed (pass --force to skip the question)")
    result = await client.post("/node/backfillips", params={"confirmed": "true"})
    emit(args, result, lambda: "\n".join(result["changes"]) or "Every node already has its addresses")


async def _expire(client: ApiClient, args: argparse.Namespace) -> None:
    if args.disable and args.expiry:
        raise CliError("give --expiry or --disable, not both")
    body: dict[str, Any] = {"disable_expiry": True} if args.disable else {}
    if args.expiry:
        body["expiry"] = args.expiry
    result = await client.post(_node_path(args, "/expire"), body)
    expiry = result["node"]["expiry"]
    done = "Node expiry disabled" if expiry is None else f"Node expires at {when(expiry)}"
    _show_node(args, result, done)


async def _rename(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.post(_node_path(args, f"/rename/{quote(args.new_name, safe='')}"))
    _show_node(args, result, f"Node renamed to {result['node']['given_name']}")


async def _move(client: ApiClient, args: argparse.Namespace) -> None:
    if not args.user:
        raise CliError("which user? give --user ID")
    user = await find_user(client, args.user)
    result = await client.post(_node_path(args, "/user"), {"user": user["id"]})
    _show_node(args, result, f"Node moved to user {user['name']}")


async def _tag(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.post(_node_path(args, "/tags"), {"tags": split_list(args.tags)})
    _show_node(args, result, "Node tags updated")


async def _approve_routes(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.post(_node_path(args, "/approve_routes"), {"routes": split_list(args.routes)})
    _show_node(args, result, "Node routes approved")


async def _register(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.post("/node/register", params={"user": args.user, "key": args.key})
    _show_node(args, result, "Node registered")


def _identifier(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--identifier", type=int, help="node id")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nodes = sub.add_parser("nodes", aliases=["node"], help="manage nodes").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    parsers = []

    def verb(name: str, aliases: list[str], help_text: str, func: Any) -> argparse.ArgumentParser:
        parser = nodes.add_parser(name, aliases=aliases, help=help_text)
        parser.set_defaults(func=api_command(func))
        parsers.append(parser)
        return parser

    verb("list", ["ls", "show"], "list nodes", _list).add_argument(
        "-u", "--user", help="only this user's nodes"
    )
    _identifier(verb("list-routes", ["lsr", "routes"], "list nodes' routes", _list_routes))
    _identifier(verb("delete", ["del"], "delete a node", _delete))
    verb("backfillips", [], "add missing addresses (e.g. after enabling prefixes.v6)", _backfill_ips)

    expire = verb("expire", ["logout", "exp", "e"], "expire a node's key (log it out)", _expire)
    _identifier(expire)
    expire.add_argument("-e", "--expiry", default="", help="expire at this RFC 3339 time instead of now")
    expire.add_argument("-d", "--disable", action="store_true", help="never expire")

    rename = verb("rename", [], "rename a node (its DNS name)", _rename)
    _identifier(rename)
    rename.add_argument("new_name", metavar="NEW_NAME")

    move = verb("move", ["mv"], "move a node to another user", _move)
    _identifier(move)
    move.add_argument("-u", "--user", help="user id (or name)")

    tag = verb("tag", ["tags", "t"], "set a node's tags", _tag)
    _identifier(tag)
    tag.add_argument("-t", "--tags", action="append", help="tags, comma-separated (tag:a,tag:b)")

    approve = verb("approve-routes", [], "set a node's approved routes", _approve_routes)
    _identifier(approve)
    approve.add_argument(
        "-r",
        "--routes",
        action="append",
        help="routes, comma-separated (10.0.0.0/8,192.168.0.0/24); empty clears them",
    )

    register = verb("register", [], "register a node waiting on interactive login", _register)
    register.add_argument("-u", "--user", required=True, help="user name")
    register.add_argument("-k", "--key", required=True, help="registration key from the login URL")

    for parser in parsers:
        add_output_flags(parser)
