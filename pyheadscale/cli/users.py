"""`users`: create, list, rename, destroy."""

from __future__ import annotations

import argparse
from typing import Any

from pyheadscale.cli.client import ApiClient, CliError, api_command
from pyheadscale.cli.output import add_output_flags, confirm, emit, stamp_of, table, when


async def find_user(client: ApiClient, ref: str) -> Any:
    """A user (headscale.v1.User) by id or by name, as the verbs that take `-u` accept either."""
    ref = ref.strip()
    if ref.isdigit():
        users = (await client.rpc("ListUsers", id=ref)).users
        if users:
            return users[0]
    users = (await client.rpc("ListUsers", name=ref)).users
    if not users:
        raise CliError(f"user {ref!r} not found")
    return users[0]


def _identified_user(args: argparse.Namespace) -> str:
    if args.identifier is not None and args.name:
        raise CliError("give --identifier or --name, not both")
    if args.identifier is not None:
        return str(args.identifier)
    if args.name:
        return str(args.name)
    raise CliError("which user? give --identifier ID or --name NAME")


def _user_rows(users: list[Any]) -> list[list[str]]:
    return [[str(u.id), u.display_name, u.name, u.email, when(stamp_of(u, "created_at"))] for u in users]


async def _create(client: ApiClient, args: argparse.Namespace) -> None:
    user = (
        await client.rpc(
            "CreateUser",
            name=args.name,
            display_name=args.display_name,
            email=args.email,
            picture_url=args.picture_url,
        )
    ).user
    emit(args, user, lambda: "User created")


async def _list(client: ApiClient, args: argparse.Namespace) -> None:
    params = {"id": str(args.identifier or ""), "name": args.name or "", "email": args.email or ""}
    users = list((await client.rpc("ListUsers", **{k: v for k, v in params.items() if v})).users)
    emit(args, users, lambda: table(["ID", "Name", "Username", "Email", "Created"], _user_rows(users)))


async def _rename(client: ApiClient, args: argparse.Namespace) -> None:
    if not args.new_name:
        raise CliError("--new-name is required")
    user = await find_user(client, _identified_user(args))
    renamed = (await client.rpc("RenameUser", old_id=user.id, new_name=args.new_name)).user
    emit(args, renamed, lambda: "User renamed")


async def _destroy(client: ApiClient, args: argparse.Namespace) -> None:
    user = await find_user(client, _identified_user(args))
    if not await confirm(
        args, f"Do you want to remove the user {user.name!r} (id {user.id}) and all its keys?"
    ):
        emit(args, {"Result": "User not destroyed"}, lambda: "User not destroyed")
        return
    result = await client.rpc("DeleteUser", id=user.id)
    emit(args, result, lambda: "User destroyed")


def _identify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--identifier", type=int, help="user id")
    parser.add_argument("-n", "--name", help="user name")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", aliases=["user"], help="manage users").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )

    create = users.add_parser("create", aliases=["c", "new"], help="create a user")
    create.add_argument("name", metavar="NAME")
    create.add_argument("-d", "--display-name", default="")
    create.add_argument("-e", "--email", default="")
    create.add_argument("-p", "--picture-url", default="")
    create.set_defaults(func=api_command(_create))

    listing = users.add_parser("list", aliases=["ls", "show"], help="list users")
    _identify(listing)
    listing.add_argument("-e", "--email", help="only the user with this email")
    listing.set_defaults(func=api_command(_list))

    rename = users.add_parser("rename", aliases=["mv"], help="rename a user")
    _identify(rename)
    rename.add_argument("-r", "--new-name", help="the new user name")
    rename.set_defaults(func=api_command(_rename))

    destroy = users.add_parser("destroy", aliases=["delete"], help="delete a user (it must have no nodes)")
    _identify(destroy)
    destroy.set_defaults(func=api_command(_destroy))

    for parser in (create, listing, rename, destroy):
        add_output_flags(parser)
