"""How the store changes state: one mutation at a time, each run to completion even if its caller leaves,
each returning the changes it caused for the change feed to deliver before the next one starts."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from pyheadscale.state.changes import Change
from pyheadscale.state.feed import ChangeFeed

P = ParamSpec("P")
R = TypeVar("R")
OwnerT = TypeVar("OwnerT", bound="Mutating")

# The task running a mutation, so a mutation calling another (in the same task) does not wait for the lock it
# already holds. A task spawned during a mutation inherits the value but is another task, so it still queues.
_MUTATION_TASK: contextvars.ContextVar[asyncio.Task[Any] | None] = contextvars.ContextVar(
    "store_mutation_task", default=None
)


@dataclass(frozen=True, slots=True)
class Outcome(Generic[R]):
    """What a mutation gives back: its result for the caller, and the changes it caused, in causal order."""

    value: R
    changes: tuple[Change, ...] = ()

    @classmethod
    def of(cls, value: R, changes: Iterable[Change] = ()) -> Outcome[R]:
        return cls(value, tuple(changes))


class MutationGuard:
    """The lock mutations queue on, those still running (for `wait_for_mutations` at shutdown), and the feed
    their changes go to: one for the whole state, shared by every component that mutates it."""

    def __init__(self) -> None:
        self._mutation_lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()
        self.feed = ChangeFeed()

    async def wait_for_mutations(self) -> None:
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)


class Mutating(Protocol):
    """A state component whose methods are mutations (`@atomic`)."""

    @property
    def mutations(self) -> MutationGuard: ...


def atomic(
    method: Callable[Concatenate[OwnerT, P], Coroutine[Any, Any, Outcome[R]]],
) -> Callable[Concatenate[OwnerT, P], Coroutine[Any, Any, R]]:
    """Run a mutation to completion even if its caller is cancelled (a client hanging up mid-request), then
    publish the changes it returns and give the caller its value.

    A mutation writes the database and then memory; cancelled between the two, the database would hold a row
    the store does not know. Running it as its own shielded task makes the pair all-or-nothing, and the guard
    waits for mutations still in flight at shutdown.

    Mutations also run one at a time. Each checks memory, awaits the database, then updates memory; two
    interleaved at that await would both pass their checks (two nodes on one single-use key, one name twice).
    Its changes are published while it still holds the lock, so the feed's order is the mutations' order. A
    mutation calling another publishes the inner one's changes first: they happened first.
    """

    @functools.wraps(method)
    async def run(owner: OwnerT, *args: P.args, **kwargs: P.kwargs) -> R:
        guard = owner.mutations
        if _MUTATION_TASK.get() is not None and _MUTATION_TASK.get() is asyncio.current_task():
            return published(guard, await method(owner, *args, **kwargs))

        async def serialized() -> R:
            _MUTATION_TASK.set(asyncio.current_task())
            async with guard._mutation_lock:
                return published(guard, await method(owner, *args, **kwargs))

        task: asyncio.Future[R] = asyncio.ensure_future(serialized())
        guard._inflight.add(task)
        task.add_done_callback(guard._inflight.discard)
        return await asyncio.shield(task)

    return run


def published(guard: MutationGuard, outcome: Outcome[R]) -> R:
    guard.feed.publish(outcome.changes)
    return outcome.value
