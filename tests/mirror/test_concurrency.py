"""Concurrent deliveries really racing on one database: each event applied once, and every
object ends at its newest event's state (ARCHITECTURE.md, "Webhook processing")."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from mirror.stripe_payloads import item, subscription, utc
from portal_service.mirror.tables import StripeEvent, Subscription, SubscriptionItem
from support import deliver, make_event

T0 = 1_760_000_000
LIVE_STATUSES = ("active", "past_due", "trialing", "unpaid")


def processed_metric(event_type: str) -> float:
    value = REGISTRY.get_sample_value(
        "portal_webhook_events_total", {"type": event_type, "result": "processed"}
    )
    return value or 0.0


def version(sub_id: str, v: int) -> dict[str, Any]:
    """The v-th state of a subscription: created one second after the previous one."""
    obj = subscription(
        sub_id,
        status=LIVE_STATUSES[v % len(LIVE_STATUSES)],
        items=[item(f"si_{sub_id}_{v}", subscription_id=sub_id, quantity=v + 1)],
        metadata={"v": str(v)},
    )
    return make_event("customer.subscription.updated", obj, created=T0 + v)


@pytest.mark.sqlite
class TestConcurrentDeliveries:
    async def test_thirty_concurrent_deliveries_of_one_event_apply_it_once(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        event = make_event("customer.subscription.created", subscription("sub_once"), created=T0)
        before = processed_metric("customer.subscription.created")
        responses = await asyncio.gather(*(deliver(client, event) for _ in range(30)))
        assert {r.status_code for r in responses} == {200}
        statuses = sorted(r.json()["status"] for r in responses)
        assert statuses == ["duplicate"] * 29 + ["processed"]
        assert await rows.count(StripeEvent) == 1
        recorded = await rows.event(event["id"])
        assert (recorded.status, recorded.attempts) == ("processed", 1)
        assert processed_metric("customer.subscription.created") - before == 1
        assert (await rows.get(Subscription, "sub_once")).source_event_id == event["id"]

    async def test_shuffled_burst_ends_at_each_newest_state(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        subscriptions, versions = 30, 10
        events = [version(f"sub_{s}", v) for s in range(subscriptions) for v in range(versions)]
        # Every event twice: redeliveries race with the first delivery too.
        deliveries = events + random.Random(7).sample(events, k=60)
        random.Random(42).shuffle(deliveries)
        responses = await asyncio.gather(*(deliver(client, e) for e in deliveries))
        assert {r.status_code for r in responses} == {200}
        assert {r.json()["status"] for r in responses} <= {"processed", "stale", "duplicate"}
        assert await rows.count(StripeEvent) == len(events)
        for s in range(subscriptions):
            row = await rows.get(Subscription, f"sub_{s}")
            newest = versions - 1
            assert row.raw["metadata"] == {"v": str(newest)}, f"sub_{s}"
            assert row.status == LIVE_STATUSES[newest % len(LIVE_STATUSES)]
            assert row.source_ts == utc(T0 + newest)
            (only,) = await rows.all(SubscriptionItem, subscription_id=f"sub_{s}")
            assert (only.id, only.quantity) == (f"si_sub_{s}_{newest}", versions)
        statuses = {e.status for e in await rows.all(StripeEvent)}
        assert statuses == {"processed"}
