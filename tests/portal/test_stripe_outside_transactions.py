"""No database transaction, row lock or pooled connection is held while Stripe is called
(ARCHITECTURE.md, "The data's path"): at the moment each Stripe request arrives, the
app's engine has no connection checked out, on every path of POST /portal-sessions and
PUT /users/{app_user_id}/customer that calls Stripe."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from portal.fakes import Mirror, SentRequest, StripeFake
from portal_service.mirror.tables import Customer
from support import backend_headers, user_headers


def _subscription(subscription_id: str, *, customer: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer,
        "status": "active",
        "livemode": False,
        "created": now - 100,
        "collection_method": "charge_automatically",
        "items": {
            "object": "list",
            "has_more": False,
            "data": [
                {
                    "id": "si_remote",
                    "object": "subscription_item",
                    "quantity": 1,
                    "current_period_start": now - 100,
                    "current_period_end": now + 86400,
                    "price": {
                        "id": "price_a",
                        "object": "price",
                        "product": "prod_a",
                        "tax_behavior": "inclusive",
                        "recurring": {"interval": "month", "usage_type": "licensed"},
                    },
                }
            ],
        },
    }


@pytest.mark.sqlite
class TestStripeCallsHoldNoConnection:
    async def test_every_stripe_call_finds_the_pool_idle(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        engine: AsyncEngine = stripe_app.app.state.engine  # type: ignore[attr-defined]
        pool = engine.pool
        assert isinstance(pool, QueuePool)  # checkedout() counts connections lent out
        held: list[tuple[str, int]] = []

        def watch(sent: SentRequest) -> None:
            held.append((f"{sent.method} {sent.path}", pool.checkedout()))

        stripe_fake.observers.append(watch)
        await mirror.customer("cus_1", app_user_id="user_1")
        stripe_fake.customers["cus_remote"] = StripeFake.customer_object("cus_remote")
        stripe_fake.subscriptions["sub_remote"] = _subscription("sub_remote", customer="cus_1")
        stripe_fake.prices["price_b"] = {
            "id": "price_b",
            "object": "price",
            "tax_behavior": "inclusive",
        }

        # A first visit: the customer is created, then the session.
        first = await stripe_app.post("/portal-sessions", headers=user_headers("user_2"))
        # A replayed creation of a since-deleted customer: the next key is tried.
        old = first.json()["customer_id"]
        await mirror.update(Customer, old, deleted=True, app_user_id=None, raw={"id": old})
        again = await stripe_app.post("/portal-sessions", headers=user_headers("user_2"))
        # A backend naming a customer only Stripe knows.
        backend = await stripe_app.post(
            "/portal-sessions", headers=backend_headers(), json={"customer_id": "cus_remote"}
        )
        # Linking a customer only Stripe knows.
        link = await stripe_app.put(
            "/users/user_9/customer", headers=backend_headers(), json={"customer_id": "cus_remote"}
        )
        # A flow on a subscription the mirror lacks, to a price it has not seen.
        flow = await stripe_app.post(
            "/portal-sessions",
            headers=user_headers("user_1"),
            json={
                "flow": {
                    "type": "subscription_update_confirm",
                    "subscription_id": "sub_remote",
                    "items": [{"id": "si_remote", "price": "price_b"}],
                }
            },
        )

        statuses = [r.status_code for r in (first, again, backend, link, flow)]
        assert statuses == [201, 201, 201, 200, 201]
        assert {call for call, _ in held} == {
            "POST /v1/customers",
            "POST /v1/billing_portal/sessions",
            "GET /v1/customers/cus_remote",
            "GET /v1/subscriptions/sub_remote",
            "GET /v1/prices/price_b",
        }
        assert len(held) == 11
        assert [call for call, checked_out in held if checked_out] == []
