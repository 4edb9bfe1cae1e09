"""`pyheadscale`: the server and its operator CLI, with Headscale's verbs and flags.

Server-side verbs (`serve`, `configtest`, `generate`, `version`, `policy check|simulate`) work on their own.
The management verbs (`users`, `nodes`, `preauthkeys`, `apikeys`, `health`) talk to a running server through
its REST API: over the unix socket locally, or with `--address` and an API key remotely.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from pyheadscale.cli import apikeys, auth, debug, health, meta, nodes, policy, preauthkeys, users
from pyheadscale.config import ConfigError, load_config
from pyheadscale.db.headscale_versions import UnsupportedHeadscaleDatabase

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


class JSONLogFormatter(logging.Formatter):
    """`log.format: json`: one JSON object per line, with the fields Headscale's zerolog lines carry."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": ZEROLOG_LEVELS.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


ZEROLOG_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, fmt: str) -> None:
    """Root logging as the config says: `log.level` and `log.format` (text or json)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONLogFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS[level])


def _serve(args: argparse.Namespace) -> int:
    from pyheadscale.app import serve_forever

    # Warnings about the file (deprecated or unknown keys) are logged while loading it.
    logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT)
    try:
        config, source = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    # Whatever the server creates (database, logs, backups, keys) is for its own user only.
    os.umask(0o077)
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
    except ConfigError as exc:  # found at start: a certificate that does not load, ...
        print(exc, file=sys.stderr)
        return 2
    except UnsupportedHeadscaleDatabase as exc:
        print(f"pyheadscale: not starting: {exc}. The database was left as it was.", file=sys.stderr)
        return 1
    return 0


def _configtest(args: argparse.Namespace) -> int:
    from pyheadscale.tls.certfiles import context_from_files

    try:
        config, source = load_config(args.config)
        if config.tls_cert_path:  # the files must load, as `serve` will need them
            context_from_files(config.path(config.tls_cert_path), config.path(config.tls_key_path))
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


SERVER_SIDE = frozenset({"serve", "configtest", "version", "generate"})


def _remote_from_config(args: argparse.Namespace) -> None:
    """Management verbs: `cli.address`/`cli.api_key` from the config (or HEADSCALE_CLI_* through it) when no
    flag gives them, as Headscale's CLI reads them. A config that does not load is reported by the verb."""
    if args.command in SERVER_SIDE:
        return
    try:
        config, _source = load_config(args.config)
    except ConfigError:
        return
    if not args.address and config.cli.address:
        args.address = config.cli.address
    if not args.api_key and config.cli.api_key.get_secret_value():
        args.api_key = config.cli.api_key.get_secret_value()
    # Headscale's 5s default is tight for a loaded server: only a configured cli.timeout replaces ours.
    if "timeout" in config.cli.model_fields_set:
        args.cli_timeout = config.cli.timeout.total_seconds()
    args.cli_insecure = config.cli.insecure


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _remote_from_config(args)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
