"""`preauthkeys`: create, list, expire, delete."""

from __future__ import annotations

import argparse
from typing import Any

from pyheadscale.auth import secret_keys
from pyheadscale.cli.client import ApiClient, CliError, api_command
from pyheadscale.cli.durations import expiration_from
from pyheadscale.cli.output import add_output_flags, emit, joined, split_list, stamp_of, table, when
from pyheadscale.cli.users import find_user

HEADER = ["ID", "Key/Prefix", "Reusable", "Ephemeral", "Used", "Expiration", "Created", "Owner"]


def _row(key: Any) -> list[str]:
    owner = joined(key.acl_tags) or key.user.name or "-"
    return [
        str(key.id),
        key.key,
        str(key.reusable).lower(),
        str(key.ephemeral).lower(),
        str(key.used).lower(),
        when(stamp_of(key, "expiration")),
        when(stamp_of(key, "created_at")),
        owner,
    ]


def _prefix(text: str) -> str:
    parts = secret_keys.split_key(text, secret_keys.PREAUTH_KEY)
    if parts is not None:
        return parts[0]
    return text.strip().removeprefix(secret_keys.PREAUTH_KEY).removesuffix("-***")


async def _which_key(client: ApiClient, args: argparse.Namespace) -> int:
    """The id of the key named on the command line: --id, or --key (full or masked) optionally with -u,
    looked up in the listing (the API names keys by id only)."""
    if args.id is not None:
        if args.id <= 0:
            raise CliError("--id must be a positive key id")
        return int(args.id)
    if not args.key:
        raise CliError("which key? give --id ID (or --key KEY, with -u USER)")
    owner = (await find_user(client, args.user)).id if args.user else None
    prefix = _prefix(args.key)
    for key in (await client.rpc("ListPreAuthKeys")).pre_auth_keys:
        if _prefix(key.key) == prefix and (owner is None or key.user.id == owner):
            return int(key.id)
    raise CliError(f"preauth key {secret_keys.masked(secret_keys.PREAUTH_KEY, prefix[:12])} not found")


async def _create(client: ApiClient, args: argparse.Namespace) -> None:
    tags = split_list(args.tags)
    if not args.user and not tags:
        raise CliError("a preauth key needs a user (-u USER_ID) or tags (--tags tag:a,tag:b)")
    fields: dict[str, Any] = {
        "reusable": args.reusable,
        "ephemeral": args.ephemeral,
        "acl_tags": tags,
        "expiration": expiration_from(args.expiration),
    }
    if args.user:
        fields["user"] = str((await find_user(client, args.user)).id)
    key = (await client.rpc("CreatePreAuthKey", **fields)).pre_auth_key
    emit(args, key, lambda: str(key.key))


async def _list(client: ApiClient, args: argparse.Namespace) -> None:
    keys = list((await client.rpc("ListPreAuthKeys")).pre_auth_keys)
    if args.user:
        owner = (await find_user(client, args.user)).id
        keys = [k for k in keys if k.user.id == owner]
    emit(args, keys, lambda: table(HEADER, [_row(k) for k in keys]))


async def _expire(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.rpc("ExpirePreAuthKey", id=await _which_key(client, args))
    emit(args, result, lambda: "Key expired")


async def _delete(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.rpc("DeletePreAuthKey", id=await _which_key(client, args))
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
