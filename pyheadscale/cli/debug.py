"""`debug create-node` (a pending login with no machine behind it, for tests) and `dump-config`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from pyheadscale.cli.client import ApiClient, api_command
from pyheadscale.cli.output import add_output_flags, emit, split_list
from pyheadscale.config import ConfigError, load_config


async def _create_node(client: ApiClient, args: argparse.Namespace) -> None:
    fields = {"key": args.key, "name": args.name, "user": args.user, "routes": split_list(args.route)}
    node = (await client.rpc("DebugCreateNode", **fields)).node
    emit(
        args,
        node,
        lambda: (
            f"Node {args.name} created; register it with "
            f"`pyheadscale auth register --auth-id {args.key} --user {args.user}`"
        ),
    )


def _dump_config(args: argparse.Namespace) -> int:
    """The configuration in force after defaults are applied, as YAML (secrets masked)."""
    try:
        config, _ = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True)
    text = yaml.safe_dump(data, sort_keys=False)
    if args.output_file:
        with open(args.output_file, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        print(text, end="")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    debug = sub.add_parser("debug", help="commands for debugging and testing").add_subparsers(
        dest="verb", metavar="VERB"
    )
    debug.required = True
    create = debug.add_parser(
        "create-node", help="a pending login (no machine) to register with auth register"
    )
    create.add_argument("--name", required=True)
    create.add_argument("-u", "--user", required=True)
    create.add_argument("-k", "--key", required=True, help="the auth id to give it (hskey-authreq-...)")
    create.add_argument(
        "-r", "--route", action="append", help="routes to advertise (repeat or comma-separate)"
    )
    create.set_defaults(func=api_command(_create_node))
    add_output_flags(create)
    dump = sub.add_parser("dump-config", aliases=["dumpConfig"], help="print the effective configuration")
    dump.add_argument("--output-file", help="write it here instead of standard output")
    dump.set_defaults(func=_dump_config)
