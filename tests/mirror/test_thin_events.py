"""Thin events (event destinations, `v2.core.event`) and lists Stripe cut at one page
(`has_more`): the related object or the whole list is fetched from Stripe (respx at the
SDK's httpx transport) and applied stamped with Stripe's Date (ARCHITECTURE.md, "Adding a new event type")."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
import stripe

from mirror.stripe_payloads import customer, entitlement_summary, http_date, item, subscription, utc
from portal_service.mirror.tables import Customer, Entitlement, Subscription, SubscriptionItem
from support import WEBHOOK_SECRET, admin_headers, deliver, make_event

T0 = 1_760_000_000
FETCHED = T0 + 30  # Stripe's clock when the related object is fetched


def thin_event(
    event_type: str,
    related: tuple[str, str] | None = None,
    *,
    created: int = T0,
    snapshot_event: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A thin event as an event destination delivers it."""
    body: dict[str, Any] = {
        "id": "evt_" + secrets.token_hex(12),
        "object": "v2.core.event",
        "type": event_type,
        "livemode": False,
        "created": datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", ".123Z"),
        "reason": {"type": "request", "request": {"id": "req_1", "idempotency_key": "k"}},
        **extra,
    }
    if related is not None:
        kind, object_id = related
        body["related_object"] = {"id": object_id, "type": kind, "url": f"/v1/{kind}s/{object_id}"}
    if snapshot_event is not None:
        body["snapshot_event"] = snapshot_event
    return body


def answer(body: dict[str, Any], *, date: int = FETCHED) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"Date": http_date(date), "Request-Id": "req_f"})


class TestThinEventSignatures:
    def test_signed_like_stripe_signs_event_destinations(self) -> None:
        # The SDK verifies thin deliveries with the same WebhookSignature as snapshot ones
        # (StripeClient.parse_event_notification): a header it generates passes our check,
        # and the SDK's own parser accepts the body shape these tests send.
        from portal_service.mirror.signatures import verify_signature

        body = json.dumps(thin_event("v1.customer.updated", ("customer", "cus_1")))
        header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
        now = int(header.split(",")[0].removeprefix("t="))
        verify_signature(body.encode(), header, [WEBHOOK_SECRET], tolerance=300, now=now)
        client = stripe.StripeClient("sk_test_123", http_client=stripe.HTTPXClient())
        notification = client.parse_event_notification(body, header, WEBHOOK_SECRET)
        assert notification.type == "v1.customer.updated"
        assert notification.related_object.id == "cus_1"  # type: ignore[attr-defined]

    async def test_bad_signature_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await deliver(
            client, thin_event("v1.customer.updated", ("customer", "cus_1")), secret="whsec_no"
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_signature"


@pytest.mark.sqlite
class TestThinEvents:
    async def test_related_object_fetched_and_stamped_with_stripes_date(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        truth = subscription(cancel_at_period_end=True, items=[item(quantity=4)])
        route = stripe_mock.get("/v1/subscriptions/sub_1").mock(return_value=answer(truth))
        event = thin_event("v1.customer.subscription.updated", ("subscription", "sub_1"))
        async with stripe_client() as client:
            response = await deliver(client, event)
        assert response.json() == {"received": True, "status": "processed"}
        assert route.call_count == 1
        assert "Stripe-Version" in route.calls.last.request.headers
        row = await rows.get(Subscription, "sub_1")
        assert (row.cancel_at_period_end, row.source_ts, row.source_event_id) == (
            True,
            utc(FETCHED),
            None,
        )
        assert [(i.id, i.quantity) for i in await rows.all(SubscriptionItem)] == [("si_1", 4)]
        recorded = await rows.event(event["id"])
        assert (recorded.status, recorded.type, recorded.attempts) == (
            "processed",
            "v1.customer.subscription.updated",
            1,
        )

    async def test_snapshot_twin_after_the_thin_event_does_not_roll_back(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        stripe_mock.get("/v1/customers/cus_1").mock(
            return_value=answer(customer(email="new@example.com"))
        )
        twin = make_event("customer.updated", customer(email="old@example.com"), created=T0)
        thin = thin_event("v1.customer.updated", ("customer", "cus_1"), snapshot_event=twin["id"])
        async with stripe_client() as client:
            assert (await deliver(client, thin)).json()["status"] == "processed"
            assert (await deliver(client, twin)).json()["status"] == "stale"
        row = await rows.get(Customer, "cus_1")
        assert (row.email, row.source_ts) == ("new@example.com", utc(FETCHED))

    async def test_thin_event_after_its_snapshot_twin_is_a_duplicate(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        twin = make_event("customer.updated", customer(email="a@example.com"), created=T0)
        thin = thin_event("v1.customer.updated", ("customer", "cus_1"), snapshot_event=twin["id"])
        async with stripe_client() as client:
            assert (await deliver(client, twin)).json()["status"] == "processed"
            assert (await deliver(client, thin)).json()["status"] == "duplicate"
            # A redelivery of the thin event is a plain duplicate too.
            assert (await deliver(client, thin)).json()["status"] == "duplicate"
        assert not stripe_mock.calls
        assert (await rows.event(thin["id"])).status == "processed"
        row = await rows.get(Customer, "cus_1")
        assert (row.email, row.source_event_id) == ("a@example.com", twin["id"])

    async def test_entitlement_summary_learns_its_customer_from_the_snapshot_twin(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        twin = make_event(
            "entitlements.active_entitlement_summary.updated",
            entitlement_summary("cus_7", "old"),
            created=T0,
        )
        stripe_mock.get(f"/v1/events/{twin['id']}").mock(return_value=answer(twin))
        listed = entitlement_summary("cus_7", "pro", "sso")["entitlements"]
        lister = stripe_mock.get("/v1/entitlements/active_entitlements").mock(
            return_value=answer(listed)
        )
        thin = thin_event(
            "v1.entitlements.active_entitlement_summary.updated", snapshot_event=twin["id"]
        )
        async with stripe_client() as client:
            assert (await deliver(client, thin)).json()["status"] == "processed"
        assert dict(parse_qsl(lister.calls.last.request.url.query.decode()))["customer"] == "cus_7"
        keys = sorted(e.lookup_key for e in await rows.all(Entitlement, customer_id="cus_7"))
        assert keys == ["pro", "sso"]

    async def test_missing_snapshot_link_is_read_from_the_v2_events_api(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        twin = make_event(
            "entitlements.active_entitlement_summary.updated",
            entitlement_summary("cus_8", "x"),
            created=T0,
        )
        thin = thin_event("v1.entitlements.active_entitlement_summary.updated")
        stripe_mock.get(f"/v2/core/events/{thin['id']}").mock(
            return_value=answer({**thin, "snapshot_event": twin["id"]})
        )
        stripe_mock.get(f"/v1/events/{twin['id']}").mock(return_value=answer(twin))
        stripe_mock.get("/v1/entitlements/active_entitlements").mock(
            return_value=answer(entitlement_summary("cus_8", "x")["entitlements"])
        )
        async with stripe_client() as client:
            assert (await deliver(client, thin)).json()["status"] == "processed"
        assert [e.lookup_key for e in await rows.all(Entitlement)] == ["x"]

    async def test_a_thin_event_naming_nothing_findable_is_ignored_not_retried(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        thin = thin_event("v1.entitlements.active_entitlement_summary.updated")
        stripe_mock.get(f"/v2/core/events/{thin['id']}").respond(
            404, json={"error": {"type": "invalid_request_error", "code": "resource_missing"}}
        )
        async with stripe_client() as client:
            assert (await deliver(client, thin)).json()["status"] == "ignored"
        recorded = await rows.event(thin["id"])
        assert (recorded.status, recorded.last_error) == (
            "ignored",
            "the thin event names no object",
        )

    async def test_event_generation_failure_resolved_resyncs_the_named_object(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        stripe_mock.get("/v1/subscriptions/sub_9").mock(
            return_value=answer(subscription("sub_9", status="past_due"))
        )
        health = thin_event(
            "v2.core.health.event_generation_failure.resolved", ("subscription", "sub_9")
        )
        async with stripe_client() as client:
            assert (await deliver(client, health)).json()["status"] == "processed"
        assert (await rows.get(Subscription, "sub_9")).status == "past_due"

    async def test_object_gone_from_stripe_is_tombstoned(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        stripe_mock.get("/v1/invoices/in_1").respond(
            404, json={"error": {"type": "invalid_request_error", "code": "resource_missing"}}
        )
        async with stripe_client() as client:
            created = make_event("invoice.created", {"id": "in_1", "object": "invoice"}, created=T0)
            await deliver(client, created)
            thin = thin_event("v1.invoice.deleted", ("invoice", "in_1"))
            assert (await deliver(client, thin)).json()["status"] == "processed"
        from portal_service.mirror.tables import Invoice

        assert (await rows.get(Invoice, "in_1")).deleted is True

    async def test_unhandled_thin_type_is_recorded_as_ignored(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        event = thin_event("v1.billing.meter.error_report_triggered", ("billing.meter", "mtr_1"))
        async with stripe_client() as client:
            assert (await deliver(client, event)).json()["status"] == "ignored"
        assert (await rows.event(event["id"])).status == "ignored"
        assert not stripe_mock.calls

    async def test_other_mode_thin_event_is_ignored_even_when_accepted(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        # This key cannot read the other mode's objects: a 404 must not tombstone them.
        event = thin_event("v1.customer.updated", ("customer", "cus_1"), livemode=True)
        async with stripe_client(accept_other_mode_events=True) as client:
            assert (await deliver(client, event)).json()["status"] == "ignored"
        assert not stripe_mock.calls
        assert await rows.get(Customer, "cus_1") is None

    async def test_offline_mode_records_thin_events_without_touching_the_mirror(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await deliver(client, make_event("customer.created", customer(), created=T0))
        event = thin_event("v1.customer.updated", ("customer", "cus_1"))
        assert (await deliver(client, event)).json()["status"] == "ignored"
        assert (await rows.event(event["id"])).status == "ignored"
        assert (await rows.get(Customer, "cus_1")).deleted is False

    async def test_stripe_down_fails_the_event_and_replay_applies_it(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        route = stripe_mock.get("/v1/customers/cus_1")
        route.respond(500, json={"error": {"type": "api_error"}})
        event = thin_event("v1.customer.updated", ("customer", "cus_1"), context="acct_9")
        async with stripe_client() as client:
            response = await deliver(client, event)
            assert response.status_code == 500
            assert response.json()["code"] == "apply_failed"
            recorded = await rows.event(event["id"])
            assert (recorded.status, recorded.account) == ("failed", "acct_9")
            assert route.calls.last.request.headers["Stripe-Account"] == "acct_9"
            route.mock(return_value=answer(customer(email="back@example.com")))
            replayed = await client.post(
                f"/admin/events/{event['id']}/replay", headers=admin_headers()
            )
        assert replayed.json()["result"] == "processed"
        row = await rows.get(Customer, "cus_1")
        assert (row.email, row.account) == ("back@example.com", "acct_9")
        assert (await rows.event(event["id"])).status == "processed"


class TestConcurrentThinDeliveries:
    async def test_two_deliveries_at_once_fetch_and_apply_once(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        async def slow(_request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0.2)  # the first delivery is still waiting on Stripe
            return answer(customer(email="once@example.com"))

        route = stripe_mock.get("/v1/customers/cus_1").mock(side_effect=slow)
        event = thin_event("v1.customer.updated", ("customer", "cus_1"))
        async with stripe_client() as client:
            first, second = await asyncio.gather(deliver(client, event), deliver(client, event))
        answers = sorted(
            (r.status_code, r.json().get("code") or r.json().get("status")) for r in (first, second)
        )
        # The second waits for nothing: it is told to come back (500), and Stripe retries.
        assert answers == [(200, "processed"), (500, "event_in_progress")]
        assert route.call_count == 1
        assert (await rows.event(event["id"])).status == "processed"


def paged(objects: list[dict[str, Any]], page_size: int) -> Callable[[httpx.Request], Any]:
    """A Stripe list endpoint serving `objects` `page_size` at a time (`starting_after`)."""

    def serve(request: httpx.Request) -> httpx.Response:
        query = dict(parse_qsl(request.url.query.decode()))
        start = 0
        if "starting_after" in query:
            start = [o["id"] for o in objects].index(query["starting_after"]) + 1
        page = objects[start : start + page_size]
        more = start + page_size < len(objects)
        return answer({"object": "list", "data": page, "has_more": more, "url": request.url.path})

    return serve


@pytest.mark.sqlite
class TestListsCutShort:
    async def test_summary_with_25_features_is_mirrored_whole(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        keys = [f"f{n:02}" for n in range(25)]
        full = entitlement_summary("cus_1", *keys)["entitlements"]["data"]
        lister = stripe_mock.get("/v1/entitlements/active_entitlements").mock(
            side_effect=paged(full, 10)
        )
        first = entitlement_summary("cus_1", "gone")
        second = entitlement_summary("cus_1", *keys[:10])
        second["entitlements"]["has_more"] = True
        async with stripe_client() as client:
            await deliver(
                client,
                make_event("entitlements.active_entitlement_summary.updated", first, created=T0),
            )
            response = await deliver(
                client,
                make_event(
                    "entitlements.active_entitlement_summary.updated", second, created=T0 + 1
                ),
            )
        assert response.json()["status"] == "processed"
        assert lister.call_count == 3  # 10 + 10 + 5
        mirrored = sorted(e.lookup_key for e in await rows.all(Entitlement, customer_id="cus_1"))
        assert mirrored == keys

    async def test_subscription_with_more_items_than_the_payload_is_completed(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        items = [item(f"si_{n}", price_id=f"price_{n}", product=f"prod_{n}") for n in range(3)]
        cut = subscription(items=items[:2])
        cut["items"]["has_more"] = True
        stripe_mock.get("/v1/subscriptions/sub_1").mock(return_value=answer(cut))
        stripe_mock.get("/v1/subscription_items").mock(side_effect=paged(items, 2))
        async with stripe_client() as client:
            await deliver(
                client,
                make_event(
                    "customer.subscription.created",
                    subscription(items=[item("si_old")]),
                    created=T0,
                ),
            )
            response = await deliver(
                client, make_event("customer.subscription.updated", cut, created=T0 + 1)
            )
        assert response.json()["status"] == "processed"
        mirrored = sorted(i.id for i in await rows.all(SubscriptionItem, subscription_id="sub_1"))
        assert mirrored == ["si_0", "si_1", "si_2"]
        assert (await rows.get(Subscription, "sub_1")).source_ts == utc(FETCHED)
