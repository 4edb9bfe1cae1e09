"""Command-line entry points: ``policy check FILE`` and ``policy simulate CASE.json ...``.

The server's CLI wires these in with :func:`register_policy_commands`; until
then ``python -m pyheadscale.policy`` runs them standalone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyheadscale.policy.engine import PolicyEngine
from pyheadscale.policy.simulate import simulate_file
from pyheadscale.policy.types import PolicyError


def check_command(args: argparse.Namespace) -> int:
    """Parse and validate a policy file; print the error (with its position) and fail if invalid."""
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{path}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        # No tailnet here: the file is validated on its own (tests blocks need nodes to run against).
        PolicyEngine(text)
    except PolicyError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


def simulate_command(args: argparse.Namespace) -> int:
    """Print one JSON line per case file with what every node of the case would receive."""
    status = 0
    for name in args.cases:
        try:
            result = simulate_file(Path(name))
        except Exception as exc:  # one broken case must not hide the answers to the others
            print(f"{name}: cannot simulate: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps(result, separators=(",", ":")), flush=True)
    return status


def register_policy_commands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add the ``policy`` command group (``check``, ``simulate``); returns it so a CLI can add more verbs."""
    policy = subparsers.add_parser("policy", help="validate and simulate ACL policies")
    commands = policy.add_subparsers(dest="policy_command", required=True)

    check = commands.add_parser("check", help="validate a HuJSON policy file")
    check.add_argument("file", help="policy file (HuJSON)")
    check.set_defaults(func=check_command)

    simulate = commands.add_parser("simulate", help="compile compatibility cases and print the results")
    simulate.add_argument("cases", nargs="+", metavar="CASE.json", help="case files in the corpus format")
    simulate.set_defaults(func=simulate_command)
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyheadscale.policy")
    register_policy_commands(parser.add_subparsers(dest="command", required=True))
    # Standalone, the "policy" group word is optional: accept both "check F" and "policy check F".
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] != "policy" and not arguments[0].startswith("-"):
        arguments.insert(0, "policy")
    args = parser.parse_args(arguments)
    status: int = args.func(args)
    return status
