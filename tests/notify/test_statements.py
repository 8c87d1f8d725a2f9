"""What the outbox costs a webhook delivery, in statements: nothing at all without
NOTIFY_URL (the intake path stays as it is), a fixed few with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mirror.test_statements import recorded_statements
from notify.support import T0, customer_created, subscribed
from support import deliver, make_event


async def statements_of(client: Any, events: list[dict[str, Any]]) -> list[list[str]]:
    """The SQL of each delivery, one list per event."""
    out = []
    for event in events:
        with recorded_statements(client) as seen:
            assert (await deliver(client, event)).json()["status"] == "processed"
        out.append([sql for sql, _many in seen])
    return out


def scenario(n: int) -> list[dict[str, Any]]:
    cus, sub = f"cus_{n}", f"sub_{n}"
    bill = {"id": f"in_{n}", "object": "invoice", "customer": cus, "status": "draft"}
    return [
        customer_created(cus),
        subscribed(cus, sub, created=T0 + 1),  # grants access: a notification
        subscribed(cus, sub, created=T0 + 2, metadata={"n": "2"}),  # changes nothing
        make_event("invoice.created", bill, created=T0 + 3),
    ]


@pytest.mark.sqlite
class TestOutboxStatements:
    async def test_without_notify_url_a_delivery_says_nothing_more(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        is_postgres: bool,
    ) -> None:
        async with client_factory() as client:
            plain = await statements_of(client, scenario(1))
        for sql in (s for delivery in plain for s in delivery):
            assert "notification" not in sql
        # The same deliveries with the outbox on: the difference is the outbox's own work.
        async with client_factory(**notify_settings(notify_coalesce_seconds=60)) as client:
            # Its delivery loop and scheduler share the engine: stopped, so only the
            # deliveries' own statements are counted.
            await client.app.state.notifier.stop()
            notifying = await statements_of(client, scenario(2))
        extra = [len(n) - len(p) for n, p in zip(notifying, plain, strict=True)]
        # The customer's notification lock exists on PostgreSQL only (SQLite has one writer).
        lock = 1 if is_postgres else 0
        # before-read, [lock], answer, newest notification (+ the insert when it changed);
        # an invoice cannot move the answer without a past_due grace: nothing.
        assert extra == [3 + lock, 4 + lock, 3 + lock, 0]
