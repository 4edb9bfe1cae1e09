"""`policy get|set`: the policy in force on the running server (`check` and `simulate` work offline)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pyheadscale.cli.client import ApiClient, CliError, api_command
from pyheadscale.cli.output import add_output_flags
from pyheadscale.policy.cli import check_command, register_policy_commands


async def _read(path: str) -> str:
    try:
        return await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"reading policy file: {path}: {exc.strerror}") from None


async def _get(client: ApiClient, args: argparse.Namespace) -> None:
    """Prints the policy text as is, whatever -o says, as Headscale's CLI does."""
    print((await client.rpc("GetPolicy")).policy)


async def _set(client: ApiClient, args: argparse.Namespace) -> None:
    await client.rpc("SetPolicy", policy=await _read(args.file))
    print("Policy updated.")


async def _check_live(client: ApiClient, args: argparse.Namespace) -> None:
    """`policy check -f FILE`: validated by the running server against its users and nodes (tests run)."""
    await client.rpc("CheckPolicy", policy=await _read(args.policy_file))
    print("Policy is valid")


def _check(args: argparse.Namespace) -> int:
    """`policy check FILE` checks offline; `-f FILE` asks the running server, as Headscale's CLI does."""
    if args.policy_file:
        return api_command(_check_live)(args)
    if not args.file:
        print(
            "Error: give the policy file: -f FILE (checked by the server) or FILE (offline)", file=sys.stderr
        )
        return 2
    return check_command(args)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands = register_policy_commands(sub)
    check = commands.choices["check"]
    check.add_argument(
        "-f", "--file", dest="policy_file", help="check against the running server's users and nodes"
    )
    check.set_defaults(func=_check)
    for action in check._actions:
        if action.dest == "file":
            action.nargs = "?"
    add_output_flags(check)
    get = commands.add_parser(
        "get", aliases=["show", "view", "fetch"], help="print the policy in force on the running server"
    )
    get.set_defaults(func=api_command(_get))
    add_output_flags(get)
    put = commands.add_parser(
        "set", aliases=["put", "update"], help="replace the policy (policy.mode: database)"
    )
    put.add_argument("-f", "--file", required=True, help="HuJSON policy file")
    put.set_defaults(func=api_command(_set))
    add_output_flags(put)
