"""The per-object lock, proven deterministically on PostgreSQL: a delivery is held inside
its transaction by the database itself (a trigger waiting on an advisory lock the test
holds), and a second delivery for the same object is shown waiting on a lock, then
applying correctly once the first commits. Without the object lock the second delivery
would finish while the first is held, and the test fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mirror.stripe_payloads import subscription, utc
from portal_service.mirror.tables import StripeEvent, Subscription
from support import deliver, make_event

T0 = 1_760_000_000
HOLD = (4242, 1)  # the test's own advisory lock (two-int form: shows as classid/objid)

WAITERS = text(
    "SELECT l.pid, l.locktype, l.classid, l.objid, l.objsubid FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE a.datname = current_database() AND NOT l.granted"
)


def is_hold(row: Any) -> bool:
    return (row.locktype, row.classid, row.objid, row.objsubid) == ("advisory", *HOLD, 2)


@pytest.fixture
async def holder(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection holding HOLD, and a trigger that makes any write of a subscription
    whose metadata says `hold` wait for it: inside the delivery's transaction, after the
    delivery took its object lock."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE FUNCTION test_hold_apply() RETURNS trigger AS $$ BEGIN "
                "IF NEW.raw->'metadata'->>'hold' = 'yes' THEN "
                f"PERFORM pg_advisory_xact_lock({HOLD[0]}, {HOLD[1]}); END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER test_hold_apply BEFORE INSERT OR UPDATE ON subscriptions "
                "FOR EACH ROW EXECUTE FUNCTION test_hold_apply()"
            )
        )
    connection = await engine.connect()
    await connection.execution_options(isolation_level="AUTOCOMMIT")
    await connection.execute(text(f"SELECT pg_advisory_lock({HOLD[0]}, {HOLD[1]})"))
    try:
        yield connection
    finally:
        await connection.execute(text("SELECT pg_advisory_unlock_all()"))
        await connection.close()
        async with engine.begin() as cleanup:
            await cleanup.execute(text("DROP TRIGGER IF EXISTS test_hold_apply ON subscriptions"))
            await cleanup.execute(text("DROP FUNCTION IF EXISTS test_hold_apply()"))


async def wait_for(condition: Any) -> Any:
    for _ in range(750):  # 15 s
        result = await condition()
        if result:
            return result
        await asyncio.sleep(0.02)
    pytest.fail("condition not reached in time")


class TestObjectLock:
    async def test_a_second_delivery_for_the_same_object_waits_then_applies(
        self, client: httpx.AsyncClient, rows: Any, holder: AsyncConnection
    ) -> None:
        first = make_event(
            "customer.subscription.created",
            subscription("sub_lock", metadata={"hold": "yes", "v": "1"}),
            created=T0,
        )
        second = make_event(
            "customer.subscription.updated",
            subscription("sub_lock", status="past_due", metadata={"v": "2"}),
            created=T0 + 1,
        )
        held = asyncio.create_task(deliver(client, first))

        async def first_is_held() -> list[Any]:
            return [r for r in (await holder.execute(WAITERS)).all() if is_hold(r)]

        (hold_waiter,) = await wait_for(first_is_held)
        waiting = asyncio.create_task(deliver(client, second))

        async def second_waits_or_finished() -> bool:
            others = [r for r in (await holder.execute(WAITERS)).all() if not is_hold(r)]
            return waiting.done() or any(r.pid != hold_waiter.pid for r in others)

        await wait_for(second_waits_or_finished)
        assert not waiting.done(), "the second delivery did not wait for the first"
        assert not held.done()
        # Nothing of either delivery is visible while the first is held.
        assert await rows.get(Subscription, "sub_lock") is None
        assert await rows.count(StripeEvent) == 0

        await holder.execute(text(f"SELECT pg_advisory_unlock({HOLD[0]}, {HOLD[1]})"))
        first_answer, second_answer = await asyncio.wait_for(
            asyncio.gather(held, waiting), timeout=15
        )
        assert (first_answer.status_code, first_answer.json()["status"]) == (200, "processed")
        assert (second_answer.status_code, second_answer.json()["status"]) == (200, "processed")
        row = await rows.get(Subscription, "sub_lock")
        assert (row.status, row.raw["metadata"], row.source_ts) == (
            "past_due",
            {"v": "2"},
            utc(T0 + 1),
        )
        assert row.source_event_id == second["id"]
        for event in (first, second):
            assert (await rows.event(event["id"])).status == "processed"
