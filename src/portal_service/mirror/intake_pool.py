"""The intake fast path's own asyncpg pool (mirror/intake_pg.py): opened by the app's
lifespan on the engine's database, its connections handed out first come, first served."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

# The fast path's own pool, beside the engine's (20): ten transactions at once already
# keep two cores busy; a delivery that waits longer than SQLAlchemy's pool would (30 s)
# for one goes to the general path.
POOL_SIZE = 10
ACQUIRE_TIMEOUT = 30.0


class _Adapted:
    """What SQLAlchemy's codec set-up reads of its adapted connection."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """The pool's reset at release, beyond asyncpg's rollback of an open transaction: none.
    The fast path leaves no session state (its lock is transaction-level; no SET, LISTEN or
    cursor), and asyncpg's default reset would be one more round trip per event."""


class IntakePool:
    """The fast path's asyncpg pool, its connections handed out first come, first served.

    asyncpg's pool gives a released connection to whichever delivery asks next, so the
    waiter it wakes may find the connection taken by a newcomer and queue again at the back:
    under load a few deliveries wait many turns (bench/README.md: p99 66-640 ms where the
    median was 20-23 ms). A semaphore sized to the pool queues them in order instead
    (asyncio's hands a released permit to its first waiter), and the pool never has a
    waiter of its own."""

    def __init__(self, pool: asyncpg.Pool, *, wait_bound: float = ACQUIRE_TIMEOUT) -> None:
        self.pool = pool
        self._turns = asyncio.Semaphore(pool.get_max_size())
        self._wait_bound = wait_bound

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._turns.locked():
            # The bound is for waiting on a busy pool, as SQLAlchemy's (30 s). With a turn
            # free the pool has a connection for it (or opens one, which asyncpg bounds),
            # and a timer per event would be paid for nothing.
            async with asyncio.timeout(self._wait_bound):
                await self._turns.acquire()
        else:
            await self._turns.acquire()
        try:
            async with self.pool.acquire() as connection:
                yield connection
        finally:
            self._turns.release()

    async def close(self) -> None:
        await self.pool.close()


async def open_pool(engine: AsyncEngine, *, size: int = POOL_SIZE) -> IntakePool | None:
    """The fast path's own asyncpg pool on `engine`'s database (its URL's connect arguments
    and SQLAlchemy's JSON codecs, so values bind and read as on the engine's connections),
    or None when the engine is not asyncpg's. Connections open on first use (none at start,
    as the engine's) and stay open. A connection the server ended (a restart,
    pg_terminate_backend) is seen closed by asyncpg and replaced at the next acquire; one
    that dies unseen fails its statement, which sends that event to the general path."""
    if engine.dialect.driver != "asyncpg":
        return None
    dialect: Any = engine.dialect
    args, kwargs = dialect.create_connect_args(engine.url)
    for adapter_only in ("prepared_statement_cache_size", "prepared_statement_name_func"):
        kwargs.pop(adapter_only, None)  # SQLAlchemy's adapter's, not asyncpg.connect's

    async def init(connection: asyncpg.Connection) -> None:
        await dialect.setup_asyncpg_json_codec(_Adapted(connection))
        await dialect.setup_asyncpg_jsonb_codec(_Adapted(connection))

    pool: asyncpg.Pool = await asyncpg.create_pool(
        *args, min_size=0, max_size=size, init=init, reset=_keep_session, **kwargs
    )
    return IntakePool(pool)
