"""A long fuzz run: the property tests of tests/fuzz with many more examples, round after round, and what came
of it.

    python benchmarks/fuzz_long.py [--examples N] [--minutes M] [-k EXPRESSION]

Each round runs `pytest tests/fuzz` with Hypothesis's `long` profile (N examples per test, fresh random
inputs every round) until M minutes have passed. It prints the executions per target (every parser call
counts, under the bounds of tests/fuzz/bounds.py) and every crash, hang or over-allocation found, with the
input Hypothesis reduced it to. The exit status is 1 when anything was found.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_round(examples: int, selection: str | None, workdir: Path) -> tuple[dict[str, int], list[str]]:
    """One pytest run; the executions per target and a report per failing test."""
    stats, junit = workdir / "stats.json", workdir / "junit.xml"
    env = os.environ | {
        "PYHEADSCALE_FUZZ_PROFILE": "long",
        "PYHEADSCALE_FUZZ_EXAMPLES": str(examples),
        "PYHEADSCALE_FUZZ_STATS": str(stats),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "pytest", "tests/fuzz", "-q", "-p", "no:cacheprovider"]
    command += ["--timeout=0", f"--junitxml={junit}"] + (["-k", selection] if selection else [])
    subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    executions = json.loads(stats.read_text()) if stats.exists() else {}
    failures = []
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            for problem in [*case.iter("failure"), *case.iter("error")]:
                detail = (problem.text or "").splitlines()
                # pytest's "E ..." lines, also inside the "| " blocks of a Hypothesis ExceptionGroup.
                found = [line.lstrip(" |")[:300] for line in detail if line.lstrip(" |").startswith("E ")]
                found = found[:12] or [str(problem.get("message", ""))[:300]]
                failures.append(f"{case.get('classname')}::{case.get('name')}\n    " + "\n    ".join(found))
    return executions, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2_000, help="examples per test and round")
    parser.add_argument("--minutes", type=float, default=10.0, help="start no new round after this long")
    parser.add_argument("-k", dest="selection", help="only the tests matching this pytest -k expression")
    args = parser.parse_args()

    total: collections.Counter[str] = collections.Counter()
    crashes: list[str] = []
    started = time.monotonic()
    rounds = 0
    with tempfile.TemporaryDirectory(prefix="fuzz-long-") as tmp:
        while rounds == 0 or time.monotonic() - started < args.minutes * 60:
            rounds += 1
            executions, failures = run_round(args.examples, args.selection, Path(tmp))
            total.update(executions)
            crashes += failures
            elapsed = time.monotonic() - started
            found = sum(executions.values())
            print(f"round {rounds}: {found} executions, {len(failures)} crashes, {elapsed:.0f}s")
            if failures:
                break
    print(f"\n{'target':32} {'executions':>12}")
    for target, count in sorted(total.items()):
        print(f"{target:32} {count:>12}")
    print(f"{'total':32} {sum(total.values()):>12}")
    print(f"\ncrashes, hangs or over-allocations found: {len(crashes)}")
    for report in crashes:
        print(report)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
