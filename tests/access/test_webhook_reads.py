"""End to end: signed Stripe events in through POST /webhooks, the app's answers out of the
access routes. Payloads follow the pinned API version's shape (periods on items, invoice
subscription under `parent`)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from portal_service.mirror.tables import Customer
from support import backend_headers, deliver, make_event, user_headers

DAY = 86_400


class Clock:
    """Event and object times: each event one second after the previous, so every event
    moves the object's watermark forward."""

    def __init__(self) -> None:
        self.start = int(time.time()) - 3 * DAY
        self._ticks: Iterator[int] = itertools.count(self.start)

    def tick(self) -> int:
        return next(self._ticks)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def customer_obj(clock: Clock, **changes: Any) -> dict[str, Any]:
    return {
        "id": "cus_w",
        "object": "customer",
        "address": {
            "city": "Lyon",
            "country": "FR",
            "line1": "1 rue de la Paix",
            "line2": None,
            "postal_code": "69001",
            "state": None,
        },
        "created": clock.start,
        "email": "ada@example.com",
        "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None},
        "livemode": False,
        "metadata": {"app_user_id": "user_w"},
        "name": "Ada Lovelace",
        "preferred_locales": ["fr"],
        "tax_exempt": "none",
    } | changes


def price(price_id: str, product: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "currency": "eur",
        "product": product,
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "tax_behavior": "exclusive",
        "type": "recurring",
        "unit_amount": 1500,
        "unit_amount_decimal": "1500",
    } | changes


def subscription_obj(clock: Clock, **changes: Any) -> dict[str, Any]:
    start, end = clock.start, clock.start + 30 * DAY
    return {
        "id": "sub_w",
        "object": "subscription",
        "billing_mode": {"type": "flexible"},
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": clock.start,
        "customer": "cus_w",
        "default_payment_method": None,
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_w",
                    "object": "subscription_item",
                    "created": clock.start,
                    "current_period_start": start,
                    "current_period_end": end,
                    "price": price("price_pro", "prod_pro"),
                    "quantity": 3,
                    "subscription": "sub_w",
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": "/v1/subscription_items?subscription=sub_w",
        },
        "latest_invoice": "in_w",
        "livemode": False,
        "metadata": {},
        "pause_collection": None,
        "schedule": None,
        "start_date": start,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
    } | changes


def invoice_obj(clock: Clock, **changes: Any) -> dict[str, Any]:
    return {
        "id": "in_w",
        "object": "invoice",
        "amount_due": 4500,
        "amount_paid": 4500,
        "amount_remaining": 0,
        "billing_reason": "subscription_create",
        "created": clock.start,
        "currency": "eur",
        "customer": "cus_w",
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_w",
        "livemode": False,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": "sub_w"},
        },
        "status": "paid",
        "status_transitions": {
            "finalized_at": clock.start + 60,
            "marked_uncollectible_at": None,
            "paid_at": clock.start + 120,
            "voided_at": None,
        },
    } | changes


def payment_method_obj(clock: Clock, **changes: Any) -> dict[str, Any]:
    return {
        "id": "pm_w",
        "object": "payment_method",
        "billing_details": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "card": {
            "brand": "visa",
            "checks": {"cvc_check": "pass"},
            "country": "FR",
            "exp_month": 8,
            "exp_year": 2031,
            "fingerprint": "Xt5EWLLDS7FJjR1c",
            "funding": "credit",
            "last4": "4242",
        },
        "created": clock.start,
        "customer": "cus_w",
        "livemode": False,
        "type": "card",
    } | changes


def entitlement_summary(*lookup_keys: str) -> dict[str, Any]:
    return {
        "object": "entitlements.active_entitlement_summary",
        "customer": "cus_w",
        "livemode": False,
        "entitlements": {
            "object": "list",
            "data": [
                {
                    "id": f"ent_{key}",
                    "object": "entitlements.active_entitlement",
                    "feature": f"feat_{key}",
                    "livemode": False,
                    "lookup_key": key,
                }
                for key in lookup_keys
            ],
            "has_more": False,
            "url": "/v1/customer/cus_w/entitlements",
        },
    }


async def send(
    client: httpx.AsyncClient, clock: Clock, event_type: str, obj: dict[str, Any], **kw: Any
) -> None:
    response = await deliver(client, make_event(event_type, obj, created=clock.tick(), **kw))
    assert response.status_code == 200, response.text
    assert response.json()["status"] in ("processed", "ignored")


async def link(db: AsyncSession, customer_id: str, app_user_id: str) -> None:
    # Webhooks never set app_user_id (ARCHITECTURE.md, "The data's path"); PUT /users/{id}/customer or
    # auto-creation does. Here the link is made the way those paths store it.
    await db.execute(
        update(Customer).where(col(Customer.id) == customer_id).values(app_user_id=app_user_id)
    )
    await db.commit()


def ts(value: str | None) -> int | None:
    return int(datetime.fromisoformat(value).timestamp()) if value is not None else None


async def me(client: httpx.AsyncClient, route: str, user: str = "user_w") -> Any:
    response = await client.get(route, headers=user_headers(user))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
async def subscribed(client: httpx.AsyncClient, db: AsyncSession, clock: Clock) -> None:
    """user_w's customer, an active subscription, its paid invoice, a default card and features,
    all delivered as Stripe sends them when a Checkout subscription starts."""
    await send(client, clock, "customer.created", customer_obj(clock))
    await link(db, "cus_w", "user_w")
    await send(client, clock, "payment_method.attached", payment_method_obj(clock))
    await send(
        client,
        clock,
        "customer.updated",
        customer_obj(clock, invoice_settings={"default_payment_method": "pm_w"}),
    )
    await send(client, clock, "customer.subscription.created", subscription_obj(clock))
    await send(client, clock, "invoice.paid", invoice_obj(clock))
    await send(
        client,
        clock,
        "entitlements.active_entitlement_summary.updated",
        entitlement_summary("premium-export", "api-access"),
    )


class TestWebhookFedReads:
    @pytest.mark.sqlite
    async def test_new_subscriber_reads_back_everything(
        self, client: httpx.AsyncClient, clock: Clock, subscribed: None
    ) -> None:
        profile = await me(client, "/me")
        assert profile["id"] == "cus_w"
        assert profile["email"] == "ada@example.com"
        assert profile["address"]["city"] == "Lyon"
        assert profile["preferred_locales"] == ["fr"]
        assert profile["default_payment_method"] == "pm_w"
        assert ts(profile["created_at"]) == clock.start

        [sub] = (await me(client, "/me/subscriptions"))["data"]
        assert sub["status"] == "active"
        assert sub["has_access"] is True
        assert sub["access_until"] is None
        assert ts(sub["current_period_end"]) == clock.start + 30 * DAY
        assert sub["portal"] == {"can_update": True, "can_cancel": True, "reasons": []}
        [item] = sub["items"]
        assert (item["price_id"], item["product_id"], item["quantity"]) == (
            "price_pro",
            "prod_pro",
            3,
        )
        assert (item["interval"], item["usage_type"], item["tax_behavior"]) == (
            "month",
            "licensed",
            "exclusive",
        )

        [invoice] = (await me(client, "/me/invoices"))["data"]
        assert invoice["hosted_invoice_url"] == "https://invoice.stripe.com/i/acct_1/test_w"
        assert invoice["subscription_id"] == "sub_w"
        assert ts(invoice["paid_at"]) == clock.start + 120

        [card] = (await me(client, "/me/payment-methods"))["data"]
        assert card["is_default"] is True
        assert card["card"] == {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2031}

        entitlements = await me(client, "/me/entitlements")
        assert entitlements["has_access"] is True
        assert entitlements["features"] == ["api-access", "premium-export"]
        assert [(p["product_id"], p["quantity"]) for p in entitlements["products"]] == [
            ("prod_pro", 3)
        ]

    async def test_cancel_at_period_end_then_deletion(
        self, client: httpx.AsyncClient, clock: Clock, subscribed: None
    ) -> None:
        end = clock.start + 30 * DAY
        await send(
            client,
            clock,
            "customer.subscription.updated",
            subscription_obj(
                clock, cancel_at_period_end=True, cancel_at=end, canceled_at=clock.start + 5
            ),
        )
        [sub] = (await me(client, "/me/subscriptions"))["data"]
        assert sub["cancel_at_period_end"] is True
        assert ts(sub["access_until"]) == end
        assert sub["has_access"] is True
        assert [
            ts(p["access_until"]) for p in (await me(client, "/me/entitlements"))["products"]
        ] == [end]

        await send(
            client,
            clock,
            "customer.subscription.deleted",
            subscription_obj(
                clock, status="canceled", ended_at=clock.start + 10, canceled_at=clock.start + 5
            ),
        )
        [sub] = (await me(client, "/me/subscriptions"))["data"]
        assert sub["status"] == "canceled"
        assert sub["portal"] == {
            "can_update": False,
            "can_cancel": False,
            "reasons": ["not_active"],
        }
        entitlements = await me(client, "/me/entitlements")
        assert entitlements["has_access"] is False
        assert entitlements["products"] == []

    async def test_upgrade_to_two_products_allows_cancel_only(
        self, client: httpx.AsyncClient, clock: Clock, subscribed: None
    ) -> None:
        two_items = subscription_obj(clock)
        two_items["items"]["data"].append(
            two_items["items"]["data"][0]
            | {"id": "si_w2", "price": price("price_seats", "prod_seats"), "quantity": 10}
        )
        await send(client, clock, "customer.subscription.updated", two_items)
        [sub] = (await me(client, "/me/subscriptions"))["data"]
        assert sub["portal"] == {
            "can_update": False,
            "can_cancel": True,
            "reasons": ["multiple_products"],
        }
        products = (await me(client, "/me/entitlements"))["products"]
        assert [(p["product_id"], p["quantity"]) for p in products] == [
            ("prod_pro", 3),
            ("prod_seats", 10),
        ]

    async def test_past_due_keeps_access_only_within_the_configured_grace(
        self, client_factory: Any, db: AsyncSession, clock: Clock
    ) -> None:
        async with client_factory(access_past_due_grace_days=3) as generous:
            await send(generous, clock, "customer.created", customer_obj(clock))
            await link(db, "cus_w", "user_w")
            await send(generous, clock, "customer.subscription.created", subscription_obj(clock))
            renewal = invoice_obj(
                clock, id="in_renew", status="open", amount_paid=0, created=int(time.time()) - DAY
            )
            await send(generous, clock, "invoice.payment_failed", renewal)
            await send(
                generous,
                clock,
                "customer.subscription.updated",
                subscription_obj(clock, status="past_due"),
            )
            in_grace = await me(generous, "/me/entitlements")
            [sub] = (await me(generous, "/me/subscriptions"))["data"]
            [invoice] = (await me(generous, "/me/invoices"))["data"]
        async with client_factory() as strict:
            no_grace = await me(strict, "/me/entitlements")
            await send(
                strict, clock, "invoice.paid", renewal | {"status": "paid", "amount_paid": 4500}
            )
            await send(strict, clock, "customer.subscription.updated", subscription_obj(clock))
            paid = await me(strict, "/me/entitlements")
        assert (sub["status"], sub["has_access"]) == ("past_due", True)
        assert (invoice["id"], invoice["status"]) == ("in_renew", "open")
        assert in_grace["has_access"] is True
        assert no_grace["has_access"] is False
        assert paid["has_access"] is True

    async def test_detached_card_and_new_default(
        self, client: httpx.AsyncClient, clock: Clock, subscribed: None
    ) -> None:
        await send(
            client,
            clock,
            "payment_method.attached",
            payment_method_obj(clock, id="pm_new", created=clock.start + 50),
        )
        await send(
            client,
            clock,
            "customer.updated",
            customer_obj(clock, invoice_settings={"default_payment_method": "pm_new"}),
        )
        await send(
            client, clock, "payment_method.detached", payment_method_obj(clock, customer=None)
        )
        methods = (await me(client, "/me/payment-methods"))["data"]
        assert [(m["id"], m["is_default"]) for m in methods] == [("pm_new", True)]

    async def test_entitlement_summary_replaces_features_and_etag(
        self, client: httpx.AsyncClient, clock: Clock, subscribed: None
    ) -> None:
        before = await client.get("/me/entitlements", headers=user_headers("user_w"))
        await send(
            client,
            clock,
            "entitlements.active_entitlement_summary.updated",
            entitlement_summary("api-access"),
        )
        after = await client.get(
            "/me/entitlements",
            headers=user_headers("user_w") | {"If-None-Match": before.headers["ETag"]},
        )
        assert after.status_code == 200
        assert after.json()["features"] == ["api-access"]
        unchanged = await client.get(
            "/me/entitlements",
            headers=user_headers("user_w") | {"If-None-Match": after.headers["ETag"]},
        )
        assert unchanged.status_code == 304

    async def test_customer_deleted_hides_everything(
        self, client: httpx.AsyncClient, clock: Clock, subscribed: None
    ) -> None:
        await send(
            client,
            clock,
            "customer.deleted",
            {"id": "cus_w", "object": "customer", "deleted": True},
        )
        profile = await client.get("/me", headers=user_headers("user_w"))
        by_id = await client.get("/customers/cus_w/entitlements", headers=backend_headers())
        by_user = await client.get("/users/user_w/entitlements", headers=backend_headers())
        assert profile.status_code == 404
        assert by_id.status_code == 404
        assert by_user.json()["customer_id"] is None

    async def test_backend_routes_read_the_same_mirror(
        self, client: httpx.AsyncClient, subscribed: None
    ) -> None:
        by_id = await client.get("/customers/cus_w/entitlements", headers=backend_headers())
        by_user = await client.get("/users/user_w/entitlements", headers=backend_headers())
        assert by_id.json()["has_access"] is True
        assert by_id.headers["ETag"] == by_user.headers["ETag"]


class TestWebhookFedIsolation:
    @pytest.mark.sqlite
    async def test_live_mode_events_do_not_reach_a_test_mode_app(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: Clock
    ) -> None:
        live_customer = customer_obj(clock, livemode=True)
        await send(client, clock, "customer.created", live_customer, livemode=True)
        await link(db, "cus_w", "user_w")
        profile = await client.get("/me", headers=user_headers("user_w"))
        assert profile.status_code == 404

    async def test_accepted_other_mode_events_stay_invisible_to_reads(
        self, client_factory: Any, db: AsyncSession, clock: Clock
    ) -> None:
        async with client_factory(accept_other_mode_events=True) as client:
            await send(
                client, clock, "customer.created", customer_obj(clock, livemode=True), livemode=True
            )
            await link(db, "cus_w", "user_w")
            await send(
                client,
                clock,
                "customer.subscription.created",
                subscription_obj(clock, livemode=True),
                livemode=True,
            )
            profile = await client.get("/me", headers=user_headers("user_w"))
            entitlements = await me(client, "/me/entitlements")
        stored = await db.get(Customer, "cus_w")
        assert stored is not None
        assert stored.livemode is True
        assert profile.status_code == 404
        assert entitlements["customer_id"] is None

    async def test_connect_account_events_stay_out_of_platform_reads(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: Clock
    ) -> None:
        await send(client, clock, "customer.created", customer_obj(clock), account="acct_1")
        await link(db, "cus_w", "user_w")
        await send(
            client,
            clock,
            "customer.subscription.created",
            subscription_obj(clock),
            account="acct_1",
        )
        profile = await client.get("/me", headers=user_headers("user_w"))
        by_id = await client.get("/customers/cus_w/entitlements", headers=backend_headers())
        assert profile.status_code == 404
        assert by_id.status_code == 404

    async def test_another_users_webhook_data_stays_theirs(
        self, client: httpx.AsyncClient, db: AsyncSession, clock: Clock, subscribed: None
    ) -> None:
        await send(
            client, clock, "customer.created", customer_obj(clock, id="cus_other", metadata={})
        )
        await link(db, "cus_other", "user_other")
        for route in ("/me/subscriptions", "/me/invoices", "/me/payment-methods"):
            assert (await me(client, route, "user_other"))["data"] == []
        entitlements = await me(client, "/me/entitlements", "user_other")
        assert entitlements["customer_id"] == "cus_other"
        assert entitlements["features"] == []
        assert entitlements["has_access"] is False
