"""Where the database's write transactions run: each one whole, in a single hand-off.

Through SQLAlchemy's asyncio layer over aiosqlite every statement of a transaction (checkout, BEGIN, INSERT,
COMMIT, the pool's reset) is a round trip between the event loop and aiosqlite's thread. The store writes one
mutation at a time, so under load the waits of those round trips, not SQLite, bounded how many registrations
a second the server could commit. A SQLite file is therefore written by a synchronous engine on a thread of
its own, a whole transaction per hand-off. The transaction commits before `run` returns, so a caller told
"done" is never lost to a crash.

PostgreSQL (asyncpg is natively async, no thread between) and in-memory SQLite (a second engine would open a
second, empty database) run the same transaction functions on the async engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, create_engine, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")
Transaction = Callable[[Connection], T]


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Writer(Protocol):
    async def run(self, transaction: Transaction[T]) -> T:
        """Run `transaction` in a transaction of its own and commit it (roll back if it raises)."""
        ...

    async def close(self) -> None: ...


class AsyncEngineWriter:
    """Transactions on the async engine, through `run_sync`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, transaction: Transaction[T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(transaction)

    async def close(self) -> None:
        return None


class SqliteThreadWriter:
    """Transactions on one dedicated thread with a synchronous SQLite connection, one hand-off each."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(make_url(url).set(drivername="sqlite+pysqlite"))
        event.listen(self.engine, "connect", sqlite_pragmas)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-writer")

    async def run(self, transaction: Transaction[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._commit, transaction)

    def _commit(self, transaction: Transaction[T]) -> T:
        with self.engine.begin() as conn:
            return transaction(conn)

    async def close(self) -> None:
        """Let queued transactions finish (they were promised), then close the connection."""
        await asyncio.to_thread(self._thread.shutdown, wait=True)
        self.engine.dispose()


def writer_for(url: str, engine: AsyncEngine) -> Writer:
    parsed = make_url(url)
    on_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    if on_file and parsed.query.get("mode") != "memory":
        return SqliteThreadWriter(url)
    return AsyncEngineWriter(engine)
