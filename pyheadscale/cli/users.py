"""`users`: create, list, rename, destroy."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from pyheadscale.cli.client import ApiClient, CliError, api_command
from pyheadscale.cli.output import add_output_flags, confirm, emit, table, when


async def find_user(client: ApiClient, ref: str) -> dict[str, Any]:
    """A user by id or by name, as the verbs that take `-u` accept either."""
    ref = ref.strip()
    if ref.isdigit():
        users = (await client.get("/user", {"id": ref}))["users"]
        if users:
            return dict(users[0])
    users = (await client.get("/user", {"name": ref}))["users"]
    if not users:
        raise CliError(f"user {ref!r} not found")
    return dict(users[0])


def _identified_user(args: argparse.Namespace) -> str:
    if args.identifier is not None and args.name:
        raise CliError("give --identifier or --name, not both")
    if args.identifier is not None:
        return str(args.identifier)
    if args.name:
        return str(args.name)
    raise CliError("which user? give --identifier ID or --name NAME")


def _user_rows(users: list[dict[str, Any]]) -> list[list[str]]:
    return [[u["id"], u["display_name"], u["name"], u["email"], when(u["created_at"])] for u in users]


async def _create(client: ApiClient, args: argparse.Namespace) -> None:
    body = {
        "name": args.name,
        "display_name": args.display_name,
        "email": args.email,
        "picture_url": args.picture_url,
    }
    result = await client.post("/user", body)
    emit(args, result["user"], lambda: f"User {result['user']['name']} created (id {result['user']['id']})")


async def _list(client: ApiClient, args: argparse.Namespace) -> None:
    params = {"id": str(args.identifier or ""), "name": args.name or "", "email": args.email or ""}
    users = (await client.get("/user", {k: v for k, v in params.items() if v}))["users"]
    emit(args, users, lambda: table(["ID", "Name", "Username", "Email", "Created"], _user_rows(users)))


async def _rename(client: ApiClient, args: argparse.Namespace) -> None:
    if not args.new_name:
        raise CliError("--new-name is required")
    user = await find_user(client, _identified_user(args))
    result = await client.post(f"/user/{user['id']}/rename/{quote(args.new_name, safe='')}")
    emit(args, result["user"], lambda: f"User {user['name']} renamed to {result['user']['name']}")


async def _destroy(client: ApiClient, args: argparse.Namespace) -> None:
    user = await find_user(client, _identified_user(args))
    if not await confirm(
        args, f"Do you want to remove the user {user['name']!r} (id {user['id']}) and all its keys?"
    ):
        raise CliError("not confirmed; nothing removed (pass --force to skip the question)")
    result = await client.delete(f"/user/{user['id']}")
    emit(args, result, lambda: f"User {user['name']} destroyed")


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
