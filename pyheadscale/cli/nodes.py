"""`nodes`: list, list-routes, delete, expire, rename, move, tag, approve-routes, register."""

from __future__ import annotations

import argparse
from typing import Any

from pyheadscale.api.protojson import from_json
from pyheadscale.cli.client import ApiClient, CliError, api_command
from pyheadscale.cli.output import (
    add_output_flags,
    confirm,
    emit,
    is_past,
    joined,
    split_list,
    stamp_of,
    table,
    when,
)
from pyheadscale.cli.users import find_user
from pyheadscale.grpc.schema import pb
from pyheadscale.tailkey import InvalidKeyError, MachinePublic, NodePublic

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


def short_key(kind: type[MachinePublic] | type[NodePublic], text: str) -> str:
    """A key's short form for the listing; a key that does not parse shows as the zero key does, empty (as
    Headscale's CLI does)."""
    try:
        return kind.from_text(text).short()
    except InvalidKeyError:
        return ""


def node_row(node: Any) -> list[str]:
    expiry = stamp_of(node, "expiry")
    return [
        str(node.id),
        node.name,
        node.given_name,
        short_key(MachinePublic, node.machine_key),
        short_key(NodePublic, node.node_key),
        node.user.name,
        joined(node.tags),
        joined(node.ip_addresses),
        str(node.pre_auth_key.ephemeral).lower(),
        when(stamp_of(node, "last_seen")),
        when(expiry, empty="N/A"),
        "online" if node.online else "offline",
        "yes" if is_past(expiry) else "no",
    ]


def _route_row(node: Any) -> list[str]:
    return [
        str(node.id),
        node.given_name,
        joined(node.approved_routes),
        joined(node.available_routes),
        joined(node.subnet_routes),
    ]


def _node_id(args: argparse.Namespace) -> int:
    if args.identifier is None:
        raise CliError("which node? give --identifier ID")
    if args.identifier <= 0:
        raise CliError("--identifier must be a positive node id")
    return int(args.identifier)


def _show_node(args: argparse.Namespace, node: Any, done: str) -> None:
    emit(args, node, lambda: done)


async def _list(client: ApiClient, args: argparse.Namespace) -> None:
    nodes = list((await client.rpc("ListNodes", **({"user": args.user} if args.user else {}))).nodes)
    emit(args, nodes, lambda: table(NODE_HEADER, [node_row(n) for n in nodes]))


async def _list_routes(client: ApiClient, args: argparse.Namespace) -> None:
    """Nodes with any route (announced, approved or served); with --identifier only that one."""
    nodes = list((await client.rpc("ListNodes")).nodes)
    if args.identifier:
        nodes = [n for n in nodes if n.id == args.identifier] or nodes
    nodes = [n for n in nodes if n.subnet_routes or n.approved_routes or n.available_routes]
    emit(args, nodes, lambda: table(ROUTES_HEADER, [_route_row(n) for n in nodes]))


async def _delete(client: ApiClient, args: argparse.Namespace) -> None:
    node = (await client.rpc("GetNode", node_id=_node_id(args))).node
    if not await confirm(args, f"Do you want to remove the node {node.name}?"):
        emit(args, {"Result": "Node not deleted"}, lambda: "Node not deleted")
        return
    await client.rpc("DeleteNode", node_id=node.id)
    emit(args, {"Result": "Node deleted"}, lambda: "Node deleted")


async def _backfill_ips(client: ApiClient, args: argparse.Namespace) -> None:
    question = (
        "Give every node an address in each configured family it lacks? Connected nodes will re-read maps."
    )
    if not await confirm(args, question):
        raise CliError("not confirmed; nothing changed (pass --force to skip the question)")
    changes = list((await client.rpc("BackfillNodeIPs", confirmed=True)).changes)
    emit(args, changes, lambda: "Node IPs backfilled successfully")


async def _expire(client: ApiClient, args: argparse.Namespace) -> None:
    if args.disable and args.expiry:
        raise CliError("give --expiry or --disable, not both")
    fields: dict[str, Any] = {"disable_expiry": True} if args.disable else {}
    if args.expiry:
        fields["expiry"] = args.expiry
    node = (await client.rpc("ExpireNode", node_id=_node_id(args), **fields)).node
    if args.disable:
        done = "Node expiry disabled"
    else:
        done = "Node expiration updated" if args.expiry else "Node expired"
    _show_node(args, node, done)


async def _rename(client: ApiClient, args: argparse.Namespace) -> None:
    """Without NEW_NAME the node takes a name from its hostname again, as Headscale does."""
    if args.new_name:
        node = (await client.rpc("RenameNode", node_id=_node_id(args), new_name=args.new_name)).node
    else:
        node = from_json(await client.post(f"/node/{_node_id(args)}/rename/"), pb.RenameNodeResponse).node
    _show_node(args, node, "Node renamed")


async def _move(client: ApiClient, args: argparse.Namespace) -> None:
    if not args.user:
        raise CliError("which user? give --user ID")
    user = await find_user(client, args.user)
    result = await client.post(f"/node/{_node_id(args)}/user", {"user": str(user.id)})
    node = from_json(result, pb.GetNodeResponse).node
    _show_node(args, node, f"Node moved to user {user.name}")


async def _tag(client: ApiClient, args: argparse.Namespace) -> None:
    node = (await client.rpc("SetTags", node_id=_node_id(args), tags=split_list(args.tags))).node
    _show_node(args, node, "Node updated")


async def _approve_routes(client: ApiClient, args: argparse.Namespace) -> None:
    routes = split_list(args.routes)
    node = (await client.rpc("SetApprovedRoutes", node_id=_node_id(args), routes=routes)).node
    _show_node(args, node, "Node updated")


async def _register(client: ApiClient, args: argparse.Namespace) -> None:
    node = (await client.rpc("RegisterNode", user=args.user, key=args.key)).node
    _show_node(args, node, f"Node {node.given_name} registered")


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
    rename.add_argument("new_name", metavar="NEW_NAME", nargs="?", default="")

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
