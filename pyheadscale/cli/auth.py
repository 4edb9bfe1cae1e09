"""`auth`: let a machine waiting on interactive login in (`register`, `approve`) or turn it away."""

from __future__ import annotations

import argparse

from pyheadscale.cli.client import ApiClient, api_command
from pyheadscale.cli.output import add_output_flags, emit, table


async def _register(client: ApiClient, args: argparse.Namespace) -> None:
    node = (await client.rpc("AuthRegister", auth_id=args.auth_id, user=args.user)).node
    emit(args, node, lambda: f"Node {node.given_name} registered")


async def _approve(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.rpc("AuthApprove", auth_id=args.auth_id)
    emit(args, result, lambda: "Auth request approved")


async def _reject(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.rpc("AuthReject", auth_id=args.auth_id)
    emit(args, result, lambda: "Auth request rejected")


async def _list(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.get("/auth/pending")
    rows = [[p["authId"], p["hostname"], p["machineKey"]] for p in result["pending"]]
    emit(args, result["pending"], lambda: table(["Auth ID", "Hostname", "Machine key"], rows))


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser(
        "auth", help="approve or reject machines waiting on interactive login"
    ).add_subparsers(dest="verb", metavar="VERB")
    auth.required = True
    for name, func, help_text in (
        ("register", _register, "register the waiting machine as a node of --user"),
        (
            "approve",
            _approve,
            "approve a waiting SSH check, or a returning machine's login (it keeps its node and owner)",
        ),
        ("reject", _reject, "turn the waiting machine away"),
    ):
        parser = auth.add_parser(name, help=help_text)
        parser.add_argument("--auth-id", required=True, help="the id at the end of the login URL")
        if name == "register":
            parser.add_argument("-u", "--user", required=True, help="user name or id")
        parser.set_defaults(func=api_command(func))
        add_output_flags(parser)
    listing = auth.add_parser("list", aliases=["ls"], help="machines waiting for approval")
    listing.set_defaults(func=api_command(_list))
    add_output_flags(listing)
