"""What one delivery says to the database: the event row written once, children in one
execution, and the object's lock always taken (ARCHITECTURE.md, "Webhook processing"). Counts of
statements, not timings: throughput numbers live in bench/README.md."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from mirror.stripe_payloads import item, subscription
from portal_service.mirror.tables import SubscriptionItem
from support import deliver, make_event

T0 = 1_760_000_000


@contextmanager
def recorded_statements(client: httpx.AsyncClient) -> Iterator[list[tuple[str, bool]]]:
    """(SQL, executemany) of every statement the app's engine runs inside the block."""
    engine = client.app.state.engine.sync_engine  # type: ignore[attr-defined]
    seen: list[tuple[str, bool]] = []

    def record(*args: Any) -> None:
        statement, executemany = args[2], args[5]
        seen.append((" ".join(statement.split()), executemany))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def touching(seen: list[tuple[str, bool]], prefix: str) -> list[tuple[str, bool]]:
    return [(sql, many) for sql, many in seen if sql.startswith(prefix)]


def three_item_event(created: int) -> dict[str, Any]:
    items = [item(f"si_{n}", quantity=n + 1) for n in range(3)]
    return make_event("customer.subscription.updated", subscription(items=items), created=created)


@pytest.mark.sqlite
class TestDeliveryStatements:
    async def test_new_event_row_is_written_once(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        created = three_item_event(T0)
        with recorded_statements(client) as seen:
            assert (await deliver(client, created)).json()["status"] == "processed"
        assert len(touching(seen, "INSERT INTO stripe_events")) == 1
        assert touching(seen, "UPDATE stripe_events") == []
        recorded = await rows.event(created["id"])
        assert (recorded.status, recorded.attempts) == ("processed", 1)
        assert recorded.processed_at is not None

    async def test_items_are_written_in_one_execution(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        with recorded_statements(client) as seen:
            await deliver(client, three_item_event(T0))
        assert [many for _sql, many in touching(seen, "INSERT INTO subscription_items")] == [True]
        assert sorted(i.quantity for i in await rows.all(SubscriptionItem)) == [1, 2, 3]


class TestObjectLock:
    """PostgreSQL: the advisory lock is taken on every path that applies an event."""

    async def test_new_event_takes_the_lock_with_its_insert(
        self, client: httpx.AsyncClient
    ) -> None:
        with recorded_statements(client) as seen:
            await deliver(client, three_item_event(T0))
        (insert,) = touching(seen, "INSERT INTO stripe_events")
        assert "pg_advisory_xact_lock" in insert[0]
        assert touching(seen, "SELECT pg_advisory_xact_lock") == []

    async def test_redelivered_failed_event_takes_the_lock_itself(
        self,
        client: httpx.AsyncClient,
        refuse_subscription_status: Callable[[str], Any],
    ) -> None:
        unpaid = make_event(
            "customer.subscription.updated", subscription(status="unpaid"), created=T0
        )
        async with refuse_subscription_status("unpaid"):
            assert (await deliver(client, unpaid)).status_code == 500
        with recorded_statements(client) as seen:
            assert (await deliver(client, unpaid)).json()["status"] == "processed"
        assert len(touching(seen, "SELECT pg_advisory_xact_lock")) == 1
