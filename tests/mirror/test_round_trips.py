"""The round trips intake saves (issue 8), and that each saving keeps its guarantee: no
savepoint around a new event's apply (a failed apply is still recorded `failed`), and no
DELETE of left-out items when nothing was left out (an item dropped is still removed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from mirror.stripe_payloads import item, subscription
from portal_service.mirror.tables import StripeEvent, SubscriptionItem
from support import deliver, make_event

T0 = 1_760_000_000


@contextmanager
def statements(client: httpx.AsyncClient) -> Iterator[list[str]]:
    engine = client.app.state.engine.sync_engine  # type: ignore[attr-defined]
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(" ".join(args[2].split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def updated(items: list[str], created: int) -> dict[str, Any]:
    obj = subscription("sub_rt", items=[item(i, subscription_id="sub_rt") for i in items])
    return make_event("customer.subscription.updated", obj, created=created)


@pytest.mark.sqlite
class TestNewEventWithoutSavepoint:
    async def test_a_new_event_is_applied_without_a_savepoint(
        self, client: httpx.AsyncClient
    ) -> None:
        with statements(client) as seen:
            answer = await deliver(client, updated(["si_a"], T0))
        assert answer.json()["status"] == "processed"
        assert [sql for sql in seen if "SAVEPOINT" in sql.upper()] == []

    async def test_a_failed_apply_still_records_the_event_failed_and_writes_nothing(
        self,
        client: httpx.AsyncClient,
        rows: Any,
        refuse_subscription_status: Callable[[str], Any],
    ) -> None:
        unpaid = make_event(
            "customer.subscription.updated", subscription("sub_rt", status="unpaid"), created=T0
        )
        async with refuse_subscription_status("unpaid"):
            failed = await deliver(client, unpaid)
        assert failed.status_code == 500
        recorded: StripeEvent = await rows.event(unpaid["id"])
        assert (recorded.status, recorded.attempts) == ("failed", 1)
        assert recorded.last_error is not None
        assert "refused by test trigger" in recorded.last_error
        assert await rows.all(SubscriptionItem) == []
        # The redelivery applies it (the recorded row is re-applied under a savepoint).
        again = await deliver(client, unpaid)
        assert again.json()["status"] == "processed"
        recorded = await rows.event(unpaid["id"])
        assert (recorded.status, recorded.attempts) == ("processed", 2)


@pytest.mark.sqlite
class TestItemsLeftOut:
    async def test_no_delete_when_the_update_keeps_every_item(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await deliver(client, updated(["si_a"], T0))
        with statements(client) as seen:
            await deliver(client, updated(["si_a", "si_b"], T0 + 1))
        assert [sql for sql in seen if sql.startswith("DELETE FROM subscription_items")] == []
        assert sorted(i.id for i in await rows.all(SubscriptionItem)) == ["si_a", "si_b"]

    async def test_an_item_left_out_is_still_deleted(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await deliver(client, updated(["si_a", "si_b"], T0))
        with statements(client) as seen:
            await deliver(client, updated(["si_b"], T0 + 1))
        assert len([sql for sql in seen if sql.startswith("DELETE FROM subscription_items")]) == 1
        assert [i.id for i in await rows.all(SubscriptionItem)] == ["si_b"]
