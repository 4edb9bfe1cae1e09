"""`pyheadscale`: the server and its operator CLI, with Headscale's verbs and flags.

Server-side verbs (`serve`, `configtest`, `generate`, `version`, `policy check|simulate`) work on their own.
The management verbs (`users`, `nodes`, `preauthkeys`, `apikeys`, `health`) talk to a running server through
its REST API: over the unix socket locally, or with `--address` and an API key remotely.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from pyheadscale.cli import apikeys, auth, debug, health, meta, nodes, policy, preauthkeys, users
from pyheadscale.config import ConfigError, load_config

LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}


def _serve(args: argparse.Namespace) -> int:
    from pyheadscale.app import serve_forever

    try:
        config, source = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=LOG_LEVELS[config.log.level], format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if source is None:
        logging.getLogger("pyheadscale").info(
            "no config file found; running on embedded defaults in %s", config.data_dir
        )
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve_forever(config))
    except KeyboardInterrupt:
        pass
    return 0


def _configtest(args: argparse.Namespace) -> int:
    try:
        config, source = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"configuration OK ({source or 'embedded defaults'}; data in {config.data_dir})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyheadscale", description="Tailscale-compatible coordination server"
    )
    parser.add_argument("-c", "--config", help="path to config.yaml (default: Headscale's search paths)")
    parser.add_argument(
        "-o",
        "--output",
        choices=("", "json", "json-line", "yaml"),
        default="",
        help="output format of management verbs: empty for a table, or json, json-line, yaml",
    )
    parser.add_argument("--force", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--address",
        help="remote server URL for management verbs "
        "(env HEADSCALE_CLI_ADDRESS; default: the local unix socket)",
    )
    parser.add_argument("--api-key", help="API key for --address (env HEADSCALE_CLI_API_KEY)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sub.add_parser("serve", help="run the server").set_defaults(func=_serve)
    sub.add_parser("configtest", help="validate the configuration").set_defaults(func=_configtest)
    meta.add_commands(sub, parser)
    for module in (users, nodes, preauthkeys, apikeys, auth, policy, debug, health):
        module.add_commands(sub)
    meta.accept_config_after_the_verb(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
