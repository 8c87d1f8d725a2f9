"""No event lost: a failed apply answers 500, stays recorded as failed, and the next
delivery or a replay applies it (ARCHITECTURE.md, "Webhook processing")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from mirror.stripe_payloads import customer, subscription
from portal_service.db import create_sessionmaker, utcnow
from portal_service.mirror.replay import events_to_replay
from portal_service.mirror.tables import Customer, StripeEvent, Subscription, SubscriptionItem
from support import admin_headers, deliver, make_event

T0 = 1_760_000_000


def failed_metric(event_type: str) -> float:
    value = REGISTRY.get_sample_value(
        "portal_webhook_events_total", {"type": event_type, "result": "failed"}
    )
    return value or 0.0


async def set_event(engine: AsyncEngine, event_id: str, **values: Any) -> None:
    async with create_sessionmaker(engine)() as session:
        await session.execute(
            update(StripeEvent).where(StripeEvent.id == event_id).values(**values)  # type: ignore[arg-type]
        )
        await session.commit()


@pytest.mark.sqlite
class TestApplyFailure:
    async def test_failed_apply_is_recorded_and_the_next_delivery_applies_it(
        self,
        client: httpx.AsyncClient,
        rows: Any,
        refuse_subscription_status: Callable[[str], Any],
    ) -> None:
        event = make_event(
            "customer.subscription.updated", subscription(status="unpaid"), created=T0
        )
        before = failed_metric("customer.subscription.updated")
        async with refuse_subscription_status("unpaid"):
            failed = await deliver(client, event)
        assert failed.status_code == 500
        assert failed.headers["content-type"] == "application/problem+json"
        assert failed.json()["code"] == "apply_failed"
        recorded = await rows.event(event["id"])
        assert (recorded.status, recorded.attempts, recorded.processed_at) == ("failed", 1, None)
        assert "refused by test trigger" in recorded.last_error
        assert "INSERT" not in recorded.last_error
        # The savepoint took the half-written mirror rows with it.
        assert await rows.get(Subscription, "sub_1") is None
        assert await rows.all(SubscriptionItem) == []
        assert failed_metric("customer.subscription.updated") - before == 1

        retried = await deliver(client, event)
        assert retried.json() == {"received": True, "status": "processed"}
        recorded = await rows.event(event["id"])
        assert (recorded.status, recorded.attempts) == ("processed", 2)
        assert (await rows.get(Subscription, "sub_1")).status == "unpaid"

    async def test_failed_event_is_applied_by_replay(
        self,
        client: httpx.AsyncClient,
        rows: Any,
        refuse_subscription_status: Callable[[str], Any],
    ) -> None:
        event = make_event(
            "customer.subscription.updated", subscription(status="unpaid"), created=T0
        )
        async with refuse_subscription_status("unpaid"):
            await deliver(client, event)
            again = await client.post(
                f"/admin/events/{event['id']}/replay", headers=admin_headers()
            )
        assert (again.status_code, again.json()["code"]) == (500, "apply_failed")
        recorded = await rows.event(event["id"])
        assert (recorded.status, recorded.attempts) == ("failed", 2)
        assert await rows.get(Subscription, "sub_1") is None
        response = await client.post(f"/admin/events/{event['id']}/replay", headers=admin_headers())
        assert response.status_code == 200
        assert response.json() == {"id": event["id"], "status": "processed", "result": "processed"}
        recorded = await rows.event(event["id"])
        assert (recorded.status, recorded.attempts) == ("processed", 3)
        row = await rows.get(Subscription, "sub_1")
        assert (row.status, row.source_event_id) == ("unpaid", event["id"])

    async def test_other_objects_keep_flowing_while_one_fails(
        self,
        client: httpx.AsyncClient,
        rows: Any,
        refuse_subscription_status: Callable[[str], Any],
    ) -> None:
        stuck = make_event("customer.subscription.updated", subscription(status="unpaid"))
        flowing = make_event("customer.updated", customer(name="Still Flowing"))
        async with refuse_subscription_status("unpaid"):
            assert (await deliver(client, stuck)).status_code == 500
            ok = await deliver(client, flowing)
        assert ok.json() == {"received": True, "status": "processed"}
        assert (await rows.event(stuck["id"])).status == "failed"
        assert (await rows.event(flowing["id"])).status == "processed"
        assert await rows.get(Subscription, "sub_1") is None
        assert (await rows.get(Customer, "cus_1")).name == "Still Flowing"

    async def test_payload_the_apply_cannot_read_fails_the_event(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        event = make_event(
            "customer.subscription.updated", {"object": "subscription", "status": "active"}
        )
        response = await deliver(client, event)
        assert (response.status_code, response.json()["code"]) == (500, "apply_failed")
        recorded = await rows.event(event["id"])
        assert (recorded.status, recorded.attempts) == ("failed", 1)
        assert recorded.last_error.startswith("ValueError")
        assert await rows.all(Subscription) == []


@pytest.mark.sqlite
class TestPendingEvents:
    async def test_event_pending_elsewhere_is_answered_500_for_a_later_retry(
        self, client: httpx.AsyncClient, rows: Any, engine: AsyncEngine
    ) -> None:
        event = make_event("customer.updated", customer(), created=T0)
        await deliver(client, event)
        await set_event(engine, event["id"], status="pending", received_at=utcnow())
        response = await deliver(client, event)
        assert response.status_code == 500
        assert response.json()["code"] == "event_in_progress"
        assert (await rows.event(event["id"])).status == "pending"

    async def test_event_stuck_pending_over_a_minute_is_applied_again(
        self, client: httpx.AsyncClient, rows: Any, engine: AsyncEngine
    ) -> None:
        event = make_event("customer.updated", customer(), created=T0)
        await deliver(client, event)
        stuck_since = utcnow() - timedelta(seconds=61)
        await set_event(engine, event["id"], status="pending", received_at=stuck_since)
        response = await deliver(client, event)
        assert response.json() == {"received": True, "status": "processed"}
        recorded = await rows.event(event["id"])
        assert (recorded.status, recorded.attempts) == ("processed", 2)
        assert (await rows.get(Customer, "cus_1")).source_event_id == event["id"]

    async def test_failed_selection_includes_events_stuck_pending(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        # `portal-service replay --status failed` is how ops recover after a crash.
        stuck, fresh, failed = (
            make_event("customer.updated", customer(f"cus_{n}"), created=T0 + n) for n in range(3)
        )
        for event in (stuck, fresh, failed):
            await deliver(client, event)
        await set_event(
            engine, stuck["id"], status="pending", received_at=utcnow() - timedelta(seconds=61)
        )
        await set_event(engine, fresh["id"], status="pending", received_at=utcnow())
        await set_event(engine, failed["id"], status="failed")
        sessionmaker = create_sessionmaker(engine)
        assert await events_to_replay(sessionmaker, status="failed") == [stuck["id"], failed["id"]]
        assert await events_to_replay(sessionmaker, status="pending") == [
            stuck["id"],
            fresh["id"],
        ]

    async def test_failed_events_gauge_counts_events_stuck_pending(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        stuck, fresh = (
            make_event("customer.updated", customer(f"cus_{n}"), created=T0 + n) for n in range(2)
        )
        for event in (stuck, fresh):
            await deliver(client, event)
        await set_event(
            engine, stuck["id"], status="pending", received_at=utcnow() - timedelta(seconds=61)
        )
        await set_event(engine, fresh["id"], status="pending", received_at=utcnow())
        await client.get("/metrics")
        assert REGISTRY.get_sample_value("portal_webhook_failed_events") == 1


@pytest.mark.sqlite
class TestUnrecordableEvents:
    @pytest.mark.parametrize(
        "field",
        [pytest.param("api_version", id="api_version"), pytest.param("account", id="account")],
    )
    async def test_fields_too_long_to_record_are_invalid_payload(
        self, client: httpx.AsyncClient, rows: Any, field: str
    ) -> None:
        # Refused up front: once the database refused the row, every redelivery would
        # fail the same way and the event would never be recorded.
        event = make_event("customer.updated", customer(), created=T0)
        event[field] = "x" * 300
        response = await deliver(client, event)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_payload"
        assert await rows.get(StripeEvent, event["id"]) is None
