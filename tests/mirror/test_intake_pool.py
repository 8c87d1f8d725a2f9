"""The intake fast path's own pool (mirror/intake_pool.py): its connections go to deliveries in
the order they asked, and a delivery that cannot get one within the bound gives up."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portal_service.mirror.intake_pool import IntakePool, open_pool


async def _one_connection_pool(engine: AsyncEngine, **options: float) -> IntakePool:
    pool = await open_pool(engine, size=1)
    assert pool is not None
    return IntakePool(pool.pool, **options) if options else pool


class TestIntakePool:
    async def test_a_waiting_delivery_is_served_before_a_newcomer(
        self, engine: AsyncEngine
    ) -> None:
        pool = await _one_connection_pool(engine)
        served: list[str] = []
        first_served, release_first = asyncio.Event(), asyncio.Event()
        newcomers: list[asyncio.Task[None]] = []

        async def deliver(name: str, hold: asyncio.Event | None = None) -> None:
            async with pool.connection() as connection:
                served.append(name)
                assert await connection.fetchval("SELECT 1") == 1
                if hold is not None:
                    first_served.set()
                    await hold.wait()

        # The race, made certain: a newcomer asks just as the connection goes back into
        # asyncpg's queue (its first step runs before the wake-up of the delivery that was
        # waiting). asyncpg's queue alone would hand the connection to the newcomer.
        queue = pool.pool._queue
        put_back = queue.put_nowait

        def put_back_as_a_newcomer_asks(holder: object) -> None:
            if not newcomers:
                newcomers.append(asyncio.get_running_loop().create_task(deliver("newcomer")))
            put_back(holder)

        try:
            first = asyncio.create_task(deliver("first", release_first))
            await first_served.wait()
            waiting = asyncio.create_task(deliver("waiting"))
            await asyncio.sleep(0.05)  # queued for the only connection
            queue.put_nowait = put_back_as_a_newcomer_asks
            release_first.set()
            await asyncio.gather(first, waiting)
            await asyncio.gather(*newcomers)
        finally:
            await pool.close()
        assert served == ["first", "waiting", "newcomer"]

    async def test_a_delivery_that_waits_past_the_bound_gives_up(self, engine: AsyncEngine) -> None:
        pool = await _one_connection_pool(engine, wait_bound=0.2)
        release = asyncio.Event()

        async def hold() -> None:
            async with pool.connection():
                await release.wait()

        holder = asyncio.create_task(hold())
        try:
            await asyncio.sleep(0.05)

            async def ask() -> None:
                async with pool.connection():
                    pass

            attempt = asyncio.create_task(ask())
            done, _ = await asyncio.wait({attempt}, timeout=10)
            if not done:  # a wait with no bound: fail rather than hang
                attempt.cancel()
                pytest.fail("the delivery still waits after 10 s; its bound is 0.2 s")
            assert isinstance(attempt.exception(), TimeoutError)
            release.set()
            await holder
            # The turn it never got is not lost: the next delivery is served at once.
            async with pool.connection() as connection:
                assert await connection.fetchval("SELECT 1") == 1
        finally:
            release.set()
            await pool.close()
