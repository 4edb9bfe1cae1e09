"""Verbs about the program itself: `version`, `generate private-key` (alias `gen`), `completion SHELL`."""

from __future__ import annotations

import argparse

import shtab

from pyheadscale import __version__
from pyheadscale.api.meta import HEADSCALE_API_VERSION, version_info
from pyheadscale.cli.output import add_output_flags, emit
from pyheadscale.tailkey import MachinePrivate

SHELLS = ("bash", "zsh", "fish", "powershell", "tcsh")


def _version(args: argparse.Namespace) -> int:
    info = version_info()
    go = info["go"]
    assert isinstance(go, dict)
    human = (
        f"pyheadscale version {__version__} (answers as Headscale v{HEADSCALE_API_VERSION})\n"
        f"commit: {info['commit']}\n"
        f"build time: {info['buildTime']}\n"
        f"built with: {go['version']} {go['os']}/{go['arch']}\n"
    )
    emit(args, info, lambda: human)
    return 0


def _generate_private_key(args: argparse.Namespace) -> int:
    key = MachinePrivate.generate().to_text()
    emit(args, {"private_key": key}, lambda: key)
    return 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], root: argparse.ArgumentParser
) -> None:
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_version)
    add_output_flags(version)

    generate = sub.add_parser("generate", aliases=["gen"], help="generate keys").add_subparsers(
        dest="what", metavar="WHAT", required=True
    )
    private_key = generate.add_parser("private-key", help="a new privkey: for noise.private_key_path")
    private_key.set_defaults(func=_generate_private_key)
    add_output_flags(private_key)

    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")

    def _completion(args: argparse.Namespace) -> int:
        print(shtab.complete(root, shell=args.shell))
        return 0

    completion.set_defaults(func=_completion)


def accept_config_after_the_verb(parser: argparse.ArgumentParser) -> None:
    """`-c FILE` anywhere on the line (`pyheadscale nodes list -c FILE`), as Headscale's persistent flag."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                if "-c" not in child._option_string_actions:
                    child.add_argument(
                        "-c", "--config", default=argparse.SUPPRESS, help="path to config.yaml"
                    )
                accept_config_after_the_verb(child)
