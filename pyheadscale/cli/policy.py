"""`policy get|set`: the policy in force on the running server (`check` and `simulate` work offline)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from pyheadscale.cli.client import ApiClient, CliError, api_command
from pyheadscale.cli.output import add_output_flags, emit
from pyheadscale.policy.cli import register_policy_commands


async def _get(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.get("/policy")
    emit(args, result, lambda: result["policy"] or "(no policy: every node may reach every node)")


async def _set(client: ApiClient, args: argparse.Namespace) -> None:
    try:
        text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror}") from None
    result = await client.call("PUT", "/policy", json={"policy": text})
    emit(args, result, lambda: "Policy updated.")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands = register_policy_commands(sub)
    get = commands.add_parser("get", help="print the policy in force on the running server")
    get.set_defaults(func=api_command(_get))
    add_output_flags(get)
    put = commands.add_parser("set", help="replace the policy (policy.mode: database)")
    put.add_argument("-f", "--file", required=True, help="HuJSON policy file")
    put.set_defaults(func=api_command(_set))
    add_output_flags(put)
