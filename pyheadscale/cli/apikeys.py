"""`apikeys`: create, list, expire, delete. The key is printed once, at creation; later only its prefix."""

from __future__ import annotations

import argparse
from typing import Any

from pyheadscale.cli.client import ApiClient, CliError, api_command
from pyheadscale.cli.durations import expiration_from
from pyheadscale.cli.output import add_output_flags, emit, stamp_of, table, when

HEADER = ["ID", "Prefix", "Expiration", "Created"]


def _which(args: argparse.Namespace) -> dict[str, Any]:
    if args.id is not None and args.prefix:
        raise CliError("give --prefix or --id, not both")
    if args.id is not None:
        if args.id <= 0:
            raise CliError("--id must be a positive key id")
        return {"id": int(args.id)}
    if not args.prefix:
        raise CliError("which key? give --prefix PREFIX or --id ID")
    return {"prefix": args.prefix}


async def _create(client: ApiClient, args: argparse.Namespace) -> None:
    key = (await client.rpc("CreateApiKey", expiration=expiration_from(args.expiration))).api_key
    emit(args, key, lambda: str(key))


async def _list(client: ApiClient, args: argparse.Namespace) -> None:
    keys = list((await client.rpc("ListApiKeys")).api_keys)
    rows = [
        [str(k.id), k.prefix, when(stamp_of(k, "expiration")), when(stamp_of(k, "created_at"))] for k in keys
    ]
    emit(args, keys, lambda: table(HEADER, rows))


async def _expire(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.rpc("ExpireApiKey", **_which(args))
    emit(args, result, lambda: "Key expired")


async def _delete(client: ApiClient, args: argparse.Namespace) -> None:
    """The REST binding always carries a prefix in its path: a key named by id is looked up first."""
    named = _which(args)
    prefix = named.get("prefix")
    if prefix is None:
        keys = (await client.rpc("ListApiKeys")).api_keys
        match = next((k for k in keys if k.id == named["id"]), None)
        if match is None:
            raise CliError(f"API key {named['id']} not found")
        prefix = match.prefix
    result = await client.rpc("DeleteApiKey", prefix=prefix)
    emit(args, result, lambda: "Key deleted")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("apikeys", aliases=["apikey", "api"], help="manage API keys").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )

    create = keys.add_parser("create", aliases=["c", "new"], help="create an API key (printed once)")
    create.add_argument(
        "-e", "--expiration", default="90d", help="lifetime, e.g. 30m, 24h, 90d (default 90d)"
    )
    create.set_defaults(func=api_command(_create))

    listing = keys.add_parser("list", aliases=["ls", "show"], help="list API keys")
    listing.set_defaults(func=api_command(_list))

    expire = keys.add_parser("expire", aliases=["revoke", "exp", "e"], help="expire an API key")
    delete = keys.add_parser("delete", aliases=["remove", "del"], help="delete an API key")
    for parser, func in ((expire, _expire), (delete, _delete)):
        parser.add_argument("-p", "--prefix", help="key prefix, as listed")
        parser.add_argument("-i", "--id", type=int, help="key id")
        parser.set_defaults(func=api_command(func))

    for parser in (create, listing, expire, delete):
        add_output_flags(parser)
