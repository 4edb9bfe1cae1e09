"""`health`: ask the running server whether it can reach its database."""

from __future__ import annotations

import argparse

from pyheadscale.cli.client import ApiClient, api_command
from pyheadscale.cli.output import add_output_flags, emit


async def _health(client: ApiClient, args: argparse.Namespace) -> None:
    result = await client.rpc("Health")
    state = "ok" if result.database_connectivity else "FAILED"
    emit(args, result, lambda: f"database connectivity: {state}")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("health", help="check the running server's health")
    parser.set_defaults(func=api_command(_health))
    add_output_flags(parser)
