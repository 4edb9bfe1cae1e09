"""What every fuzz target is held to: only its documented clean errors come out, it finishes, and what it
allocates is bounded.

`call` and `run` wrap one execution of a parser. An exception outside `allowed` fails the test (a crash); an
execution still running after HANG_SECONDS is stopped and fails it (a hang; a detector with a wide margin, not
a speed measurement); an execution whose peak traced allocation passes MAX_ALLOCATION fails it.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

HANG_SECONDS = 20.0
MAX_ALLOCATION = 64 << 20
EXECUTIONS: collections.Counter[str] = collections.Counter()


class Hang(Exception):
    """An execution did not finish within HANG_SECONDS."""


@contextmanager
def _allocation_bound(target: str) -> Iterator[None]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()
        EXECUTIONS[target] += 1
    assert peak <= MAX_ALLOCATION, f"{target}: allocated {peak} bytes for one input"


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang(f"no result within {HANG_SECONDS}s")


def call(
    target: str,
    fn: Callable[..., T],
    *args: Any,
    allowed: tuple[type[BaseException], ...] = (),
    **kwargs: Any,
) -> T | None:
    """Run a synchronous parser once; its value, or None when it raised one of `allowed`."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        with _allocation_bound(target):
            try:
                return fn(*args, **kwargs)
            except allowed:
                return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(
    loop: asyncio.AbstractEventLoop,
    target: str,
    make: Callable[[], Awaitable[T]],
    allowed: tuple[type[BaseException], ...] = (),
) -> T | None:
    """Run an asynchronous parser once on `loop`, under the same bounds as `call`."""

    async def bounded() -> T | None:
        try:
            async with asyncio.timeout(HANG_SECONDS):
                return await make()
        except TimeoutError:
            raise Hang(f"{target}: no result within {HANG_SECONDS}s") from None
        except allowed:
            return None

    with _allocation_bound(target):
        return loop.run_until_complete(bounded())
