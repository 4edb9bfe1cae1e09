"""`preauthkeys`: create, list, expire, delete."""

from __future__ import annotations

import argparse
from typing import Any

from pyheadscale.cli.client import ApiClient, CliError, api_command
from pyheadscale.cli.durations import expiration_from
from pyheadscale.cli.output import add_output_flags, emit, joined, split_list, table, when
from pyheadscale.cli.users import find_user

HEADER = ["ID", "Key/Prefix", "Reusable", "Ephemeral", "Used", "Expiration", "Created", "Owner"]


def _row(key: dict[str, Any]) -> list[str]:
    owner = joined(key["acl_tags"]) or (key.get("user") or {}).get("name", "") or "-"
    return [
        key["id"],
        key["key"],
        str(key["reusable"]).lower(),
        str(key["ephemeral"]).lower(),
        str(key["used"]).lower(),
        when(key["expiration"]),
        when(key["created_at"]),
        owner,
    ]


async def _which_key(client: ApiClient, args: argparse.Namespace) -> dict[str, str]:
    """The key named on the command line: --id, or --key (full or masked) optionally with -u."""
    if args.id is not None:
        if args.id <= 0:
            raise CliError("--id must be a positive key id")
        return {"id": str(args.id)}
    if not args.key:
        raise CliError("which key? give --id ID (or --key KEY, with -u USER)")
    named = {"key": args.key}
    if args.user:
        named["user"] = (await find_user(client, args.user))["id"]
    return named


async def _create(client: ApiClient, args: argparse.Namespace) -> None:
    tags = split_list(args.tags)
    if not args.user and not tags:
        raise CliError("a preauth key needs a user (-u USER_ID) or tags (--tags tag:a,tag:b)")
    body: dict[str, Any] = {
        "reusable": args.reusable,
        "ephemeral": args.ephemeral,
        "acl_tags": tags,
        "expiration": expiration_from(args.expiration),
    }
    if args.user:
        body["user"] = (await find_user(client, args.user))["id"]
    key = (await client.post("/preauthkey", body))["pre_auth_key"]
    emit(args, key, lambda: str(key["key"]))


async def _list(client: ApiClient, args: argparse.Namespace) -> None:
    params = {"user": (await find_user(client, args.user))["id"]} if args.user else None
    keys = (await client.get("/preauthkey", params))["pre_auth_keys"]
    emit(args, keys, lambda: table(HEADER, [_row(k) for k in keys]))


async def _expire(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.post("/preauthkey/expire", await _which_key(client, args))
    emit(args, result, lambda: "Key expired")


async def _delete(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.delete("/preauthkey", await _which_key(client, args))
    emit(args, result, lambda: "Key deleted")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "preauthkeys", aliases=["preauthkey", "authkey", "pre"], help="manage preauth keys"
    ).add_subparsers(dest="verb", metavar="VERB", required=True)

    create = keys.add_parser("create", aliases=["c", "new"], help="create a preauth key (printed once)")
    create.add_argument("-u", "--user", help="owner: user id (or name)")
    create.add_argument("--reusable", action="store_true", help="the key can register several nodes")
    create.add_argument("--ephemeral", action="store_true", help="nodes are removed when they go offline")
    create.add_argument("-e", "--expiration", default="1h", help="lifetime, e.g. 30m, 24h, 90d (default 1h)")
    create.add_argument("--tags", action="append", help="tags for the nodes, comma-separated (tag:a,tag:b)")
    create.set_defaults(func=api_command(_create))

    listing = keys.add_parser("list", aliases=["ls", "show"], help="list preauth keys")
    listing.add_argument("-u", "--user", help="only this user's keys (id or name)")
    listing.set_defaults(func=api_command(_list))

    expire = keys.add_parser("expire", aliases=["revoke", "exp", "e"], help="expire a preauth key")
    delete = keys.add_parser("delete", aliases=["del", "rm", "d"], help="delete a preauth key")
    for parser, func in ((expire, _expire), (delete, _delete)):
        parser.add_argument("-i", "--id", type=int, help="key id")
        parser.add_argument("-k", "--key", help="the key, full or as listed (hskey-auth-<prefix>-***)")
        parser.add_argument("-u", "--user", help="owner of --key (id or name)")
        parser.set_defaults(func=api_command(func))

    for parser in (create, listing, expire, delete):
        add_output_flags(parser)
