"""How the store changes state: one mutation at a time, each run to completion even if its caller leaves."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
GuardT = TypeVar("GuardT", bound="MutationGuard")

# The task running a mutation, so a mutation calling another (in the same task) does not wait for the lock it
# already holds. A task spawned during a mutation inherits the value but is another task, so it still queues.
_MUTATION_TASK: contextvars.ContextVar[asyncio.Task[Any] | None] = contextvars.ContextVar(
    "store_mutation_task", default=None
)


class MutationGuard:
    """The lock mutations queue on, and those still running (for `wait_for_mutations` at shutdown)."""

    def __init__(self) -> None:
        self._mutation_lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()

    async def wait_for_mutations(self) -> None:
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)


def atomic(
    method: Callable[Concatenate[GuardT, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[GuardT, P], Coroutine[Any, Any, R]]:
    """Run a mutation to completion even if its caller is cancelled (a client hanging up mid-request).

    A mutation writes the database and then memory; cancelled between the two, the database would hold a row
    the store does not know. Running it as its own shielded task makes the pair all-or-nothing, and the guard
    waits for mutations still in flight at shutdown.

    Mutations also run one at a time. Each checks memory, awaits the database, then updates memory; two
    interleaved at that await would both pass their checks (two nodes on one single-use key, one name twice).
    """

    @functools.wraps(method)
    async def run(guard: GuardT, *args: P.args, **kwargs: P.kwargs) -> R:
        if _MUTATION_TASK.get() is not None and _MUTATION_TASK.get() is asyncio.current_task():
            return await method(guard, *args, **kwargs)

        async def serialized() -> R:
            _MUTATION_TASK.set(asyncio.current_task())
            async with guard._mutation_lock:
                return await method(guard, *args, **kwargs)

        task: asyncio.Future[R] = asyncio.ensure_future(serialized())
        guard._inflight.add(task)
        task.add_done_callback(guard._inflight.discard)
        return await asyncio.shield(task)

    return run
