"""The ordering watermark: newest state wins, ties settled from payloads or by Stripe,
deletion is terminal (ARCHITECTURE.md, "Webhook processing")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import REGISTRY

from mirror.stripe_payloads import (
    customer,
    entitlement_summary,
    http_date,
    invoice,
    item,
    portal_session,
    subscription,
    utc,
)
from portal_service.mirror.tables import (
    Customer,
    Entitlement,
    EntitlementSummary,
    Invoice,
    PortalSession,
    StripeEvent,
    Subscription,
    SubscriptionItem,
)
from support import deliver, make_event

T0 = 1_760_000_000


async def send(client: httpx.AsyncClient, event: dict[str, Any]) -> httpx.Response:
    response = await deliver(client, event)
    return response


def sub_event(
    event_type: str = "customer.subscription.updated", *, created: int, **fields: Any
) -> dict[str, Any]:
    return make_event(event_type, subscription(**fields), created=created)


@pytest.mark.sqlite
class TestWatermark:
    async def test_newer_then_older_keeps_the_newer_state(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        newer = sub_event(created=T0 + 10, cancel_at_period_end=True)
        older = sub_event(created=T0, cancel_at_period_end=False)
        assert (await send(client, newer)).json()["status"] == "processed"
        response = await send(client, older)
        assert response.json() == {"received": True, "status": "stale"}
        row = await rows.get(Subscription, "sub_1")
        assert (row.cancel_at_period_end, row.source_ts) == (True, utc(T0 + 10))
        assert row.source_event_id == newer["id"]
        assert (await rows.event(older["id"])).status == "processed"

    async def test_older_then_newer_moves_the_watermark(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, sub_event(created=T0, cancel_at_period_end=False))
        newer = sub_event(created=T0 + 1, cancel_at_period_end=True)
        await send(client, newer)
        row = await rows.get(Subscription, "sub_1")
        assert (row.cancel_at_period_end, row.source_event_id) == (True, newer["id"])

    async def test_stale_event_leaves_items_alone(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, sub_event(created=T0 + 5, items=[item("si_new")]))
        await send(client, sub_event(created=T0, items=[item("si_old")]))
        assert [i.id for i in await rows.all(SubscriptionItem)] == ["si_new"]

    async def test_replay_of_the_applied_event_is_a_no_op(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        from support import admin_headers

        event = sub_event(created=T0)
        await send(client, event)
        before = await rows.get(Subscription, "sub_1")
        response = await client.post(f"/admin/events/{event['id']}/replay", headers=admin_headers())
        assert response.json()["result"] == "processed"
        assert (await rows.get(Subscription, "sub_1")).updated_at == before.updated_at


@pytest.mark.sqlite
class TestTerminalStates:
    async def test_late_update_after_deletion_stays_deleted(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, sub_event(created=T0, status="active"))
        await send(
            client, sub_event("customer.subscription.deleted", created=T0 + 5, status="canceled")
        )
        late = await send(client, sub_event(created=T0 + 2, status="active"))
        assert late.json()["status"] == "stale"
        row = await rows.get(Subscription, "sub_1")
        assert (row.status, row.deleted) == ("canceled", True)

    async def test_newer_live_state_never_revives_a_deleted_subscription(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(
            client, sub_event("customer.subscription.deleted", created=T0, status="canceled")
        )
        response = await send(client, sub_event(created=T0 + 60, status="active"))
        assert response.json()["status"] == "stale"
        assert (await rows.get(Subscription, "sub_1")).status == "canceled"

    @pytest.mark.parametrize("status", ["canceled", "incomplete_expired"])
    async def test_terminal_status_is_not_overwritten_by_same_second_live_state(
        self, client: httpx.AsyncClient, rows: Any, status: str
    ) -> None:
        await send(client, sub_event(created=T0, status=status))
        response = await send(client, sub_event(created=T0, status="active"))
        assert response.json()["status"] == "stale"
        assert (await rows.get(Subscription, "sub_1")).status == status

    async def test_newer_final_state_still_applies(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, sub_event(created=T0, status="canceled"))
        await send(client, sub_event(created=T0 + 1, status="canceled", metadata={"note": "x"}))
        assert (await rows.get(Subscription, "sub_1")).raw["metadata"] == {"note": "x"}

    async def test_deleted_customer_stays_deleted(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, make_event("customer.deleted", customer(), created=T0))
        response = await send(
            client, make_event("customer.updated", customer(name="Back"), created=T0 + 9)
        )
        assert response.json()["status"] == "stale"
        row = await rows.get(Customer, "cus_1")
        assert (row.deleted, row.name) == (True, "Ada")

    async def test_deleted_invoice_stays_deleted(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, make_event("invoice.deleted", invoice(status="draft"), created=T0))
        await send(client, make_event("invoice.updated", invoice(status="draft"), created=T0))
        assert (await rows.get(Invoice, "in_1")).deleted is True


@pytest.mark.sqlite
class TestTiesSettledFromPayloads:
    """Ties the payloads can settle never call Stripe: the mocked Stripe has no routes, so
    any call would fail the delivery."""

    async def test_identical_object_is_a_no_op(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        first = sub_event(created=T0)
        twin = make_event("customer.subscription.updated", first["data"]["object"], created=T0)
        async with stripe_client() as client:
            await send(client, first)
            response = await send(client, twin)
        # A call to the unrouted mocked Stripe would have failed the apply: a 500 and a
        # `failed` event. respx raises before it records such a call, so `stripe_mock.calls`
        # would stay empty even then; the answer and the event's status are what prove it.
        assert (response.status_code, response.json()["status"]) == (200, "processed")
        assert (await rows.event(twin["id"])).status == "processed"
        assert (await rows.get(Subscription, "sub_1")).source_event_id == first["id"]

    async def test_terminal_status_wins_a_tie(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        canceled = sub_event(created=T0, status="canceled")
        async with stripe_client() as client:
            await send(client, sub_event(created=T0, status="active"))
            response = await send(client, canceled)
        assert (response.status_code, response.json()["status"]) == (200, "processed")
        assert (await rows.event(canceled["id"])).status == "processed"
        assert (await rows.get(Subscription, "sub_1")).status == "canceled"

    @pytest.mark.parametrize(
        ("first", "second", "stored"),
        [
            ("draft", "open", "open"),
            ("open", "draft", "open"),
            ("open", "paid", "paid"),
            ("paid", "open", "paid"),
            ("uncollectible", "void", "void"),
        ],
    )
    async def test_invoice_status_only_moves_forward(
        self,
        stripe_client: Callable[..., Any],
        rows: Any,
        stripe_mock: respx.MockRouter,
        first: str,
        second: str,
        stored: str,
    ) -> None:
        later = make_event("invoice.updated", invoice(status=second), created=T0)
        async with stripe_client() as client:
            await send(client, make_event("invoice.updated", invoice(status=first), created=T0))
            response = await send(client, later)
        assert response.status_code == 200
        assert response.json()["status"] == ("processed" if stored == second else "stale")
        assert (await rows.event(later["id"])).status == "processed"
        assert (await rows.get(Invoice, "in_1")).status == stored

    async def test_portal_sessions_cannot_be_fetched_so_the_later_delivery_applies(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        later = make_event(
            "billing_portal.session.created", portal_session(locale="de"), created=T0
        )
        async with stripe_client() as client:
            await send(
                client,
                make_event(
                    "billing_portal.session.created", portal_session(locale="fr"), created=T0
                ),
            )
            response = await send(client, later)
        assert (response.status_code, response.json()["status"]) == (200, "processed")
        assert (await rows.event(later["id"])).status == "processed"
        assert (await rows.get(PortalSession, "bps_1")).locale == "de"


class TestTiesSettledByStripe:
    async def test_same_second_update_refetches_subscription(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        truth = subscription(cancel_at_period_end=True, items=[item(quantity=7)])
        route = stripe_mock.get("/v1/subscriptions/sub_1").respond(
            200, json=truth, headers={"Date": http_date(T0 + 3), "Request-Id": "req_1"}
        )
        refetched_before = (
            REGISTRY.get_sample_value(
                "portal_webhook_events_total",
                {"type": "customer.subscription.updated", "result": "refetched"},
            )
            or 0.0
        )
        tie = sub_event(created=T0, cancel_at_period_end=False, metadata={"v": "2"})
        async with stripe_client() as client:
            await send(client, sub_event(created=T0, cancel_at_period_end=False))
            response = await send(client, tie)
        assert response.json() == {"received": True, "status": "processed"}
        assert route.call_count == 1
        sent = route.calls.last.request
        assert sent.headers["Authorization"] == "Bearer sk_test_123"
        assert "Stripe-Version" in sent.headers
        row = await rows.get(Subscription, "sub_1")
        assert (row.cancel_at_period_end, row.source_ts, row.source_event_id) == (
            True,
            utc(T0 + 3),
            None,
        )
        (only,) = await rows.all(SubscriptionItem)
        assert only.quantity == 7
        assert (await rows.event(tie["id"])).status == "processed"
        refetched_after = REGISTRY.get_sample_value(
            "portal_webhook_events_total",
            {"type": "customer.subscription.updated", "result": "refetched"},
        )
        assert refetched_after == refetched_before + 1

    async def test_event_older_than_the_refetch_is_stale(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        stripe_mock.get("/v1/subscriptions/sub_1").respond(
            200, json=subscription(status="past_due"), headers={"Date": http_date(T0 + 3)}
        )
        async with stripe_client() as client:
            await send(client, sub_event(created=T0, metadata={"v": "1"}))
            await send(client, sub_event(created=T0, metadata={"v": "2"}))
            late = await send(client, sub_event(created=T0 + 2, status="active"))
        assert late.json()["status"] == "stale"
        assert (await rows.get(Subscription, "sub_1")).status == "past_due"

    async def test_event_in_the_second_of_the_refetch_ties_again(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        route = stripe_mock.get("/v1/subscriptions/sub_1")
        route.side_effect = [
            httpx.Response(
                200, json=subscription(status="past_due"), headers={"Date": http_date(T0 + 3)}
            ),
            httpx.Response(
                200, json=subscription(status="unpaid"), headers={"Date": http_date(T0 + 4)}
            ),
        ]
        async with stripe_client() as client:
            await send(client, sub_event(created=T0, metadata={"v": "1"}))
            await send(client, sub_event(created=T0, metadata={"v": "2"}))
            await send(client, sub_event(created=T0 + 3, status="active"))
        assert route.call_count == 2
        row = await rows.get(Subscription, "sub_1")
        assert (row.status, row.source_ts) == ("unpaid", utc(T0 + 4))

    async def test_failed_refetch_fails_the_event_until_redelivered(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        route = stripe_mock.get("/v1/subscriptions/sub_1")
        route.side_effect = [
            httpx.Response(500, json={"error": {"type": "api_error", "message": "boom"}}),
            httpx.Response(
                200, json=subscription(status="past_due"), headers={"Date": http_date(T0 + 3)}
            ),
        ]
        tie = sub_event(created=T0, metadata={"v": "2"})
        async with stripe_client() as client:
            await send(client, sub_event(created=T0, metadata={"v": "1"}))
            failed = await send(client, tie)
            recorded = await rows.event(tie["id"])
            retried = await send(client, tie)
        assert failed.status_code == 500
        assert failed.json()["code"] == "apply_failed"
        assert (recorded.status, recorded.attempts) == ("failed", 1)
        assert recorded.last_error.startswith("StripeUnavailable")
        assert retried.json()["status"] == "processed"
        assert (await rows.event(tie["id"])).attempts == 2
        assert (await rows.get(Subscription, "sub_1")).status == "past_due"

    async def test_object_gone_from_stripe_is_tombstoned(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        stripe_mock.get("/v1/invoices/in_1").respond(
            404,
            json={
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "message": "No such invoice",
                }
            },
        )
        async with stripe_client() as client:
            await send(client, make_event("invoice.updated", invoice(status="draft"), created=T0))
            response = await send(
                client,
                make_event("invoice.updated", invoice(status="draft", amount_due=9), created=T0),
            )
        assert response.json()["status"] == "processed"
        row = await rows.get(Invoice, "in_1")
        assert (row.deleted, row.amount_due) == (True, 1500)

    async def test_entitlement_tie_lists_active_entitlements(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        listing = {
            "object": "list",
            "url": "/v1/entitlements/active_entitlements",
            "has_more": False,
            "data": [
                {
                    "id": "ent_9",
                    "object": "entitlements.active_entitlement",
                    "feature": "feat_sso",
                    "livemode": False,
                    "lookup_key": "sso",
                }
            ],
        }
        route = stripe_mock.get("/v1/entitlements/active_entitlements").respond(
            200, json=listing, headers={"Date": http_date(T0 + 1)}
        )
        kind = "entitlements.active_entitlement_summary.updated"
        async with stripe_client() as client:
            await send(client, make_event(kind, entitlement_summary("cus_1", "seats"), created=T0))
            await send(client, make_event(kind, entitlement_summary("cus_1", "audit"), created=T0))
        assert route.calls.last.request.url.params["customer"] == "cus_1"
        assert [e.lookup_key for e in await rows.all(Entitlement)] == ["sso"]


@pytest.mark.sqlite
class TestOfflineTies:
    async def test_offline_tie_applies_the_event(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, sub_event(created=T0, metadata={"v": "1"}))
        tie = sub_event(created=T0, metadata={"v": "2"})
        assert (await send(client, tie)).json()["status"] == "processed"
        row = await rows.get(Subscription, "sub_1")
        assert (row.raw["metadata"], row.source_event_id) == ({"v": "2"}, tie["id"])

    async def test_offline_tie_never_revives_a_tombstone(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, make_event("customer.deleted", customer(), created=T0))
        await send(client, make_event("customer.updated", customer(name="Back"), created=T0))
        assert (await rows.get(Customer, "cus_1")).deleted is True

    async def test_no_event_is_lost_to_a_tie(self, client: httpx.AsyncClient, rows: Any) -> None:
        first = sub_event(created=T0, metadata={"v": "1"})
        second = sub_event(created=T0, metadata={"v": "2"})
        await send(client, first)
        await send(client, second)
        statuses = {(await rows.event(e["id"])).status for e in (first, second)}
        assert statuses == {"processed"}
        assert await rows.count(StripeEvent) == 2


class TestTiesOfAnotherMode:
    """What a re-fetch writes keeps the event's mode, and a tie Stripe cannot be asked about
    with this key is settled like offline mode (ARCHITECTURE.md, "Webhook processing")."""

    async def test_live_entitlement_refetch_stays_in_live_mode(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        listing = {
            "object": "list",
            "url": "/v1/entitlements/active_entitlements",
            "has_more": False,
            "data": [
                {
                    "id": "ent_9",
                    "object": "entitlements.active_entitlement",
                    "feature": "feat_sso",
                    "livemode": True,
                    "lookup_key": "sso",
                }
            ],
        }
        route = stripe_mock.get("/v1/entitlements/active_entitlements").respond(
            200, json=listing, headers={"Date": http_date(T0 + 1)}
        )
        kind = "entitlements.active_entitlement_summary.updated"
        first, second = (
            {**entitlement_summary("cus_1", key), "livemode": True} for key in ("seats", "audit")
        )
        async with stripe_client(stripe_api_key="sk_live_123") as client:
            await send(client, make_event(kind, first, created=T0, livemode=True))
            response = await send(client, make_event(kind, second, created=T0, livemode=True))
        assert response.json()["status"] == "processed"
        assert route.call_count == 1
        (only,) = await rows.all(Entitlement)
        assert (only.lookup_key, only.livemode) == ("sso", True)
        assert (await rows.get(EntitlementSummary, "cus_1")).livemode is True

    async def test_live_customer_refetched_as_deleted_stays_in_live_mode(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        # Stripe answers a retrieve of a deleted customer with a stub that has no livemode.
        stripe_mock.get("/v1/customers/cus_1").respond(
            200,
            json={"id": "cus_1", "object": "customer", "deleted": True},
            headers={"Date": http_date(T0 + 1)},
        )
        async with stripe_client(stripe_api_key="sk_live_123") as client:
            for name in ("Ada", "Grace"):
                await send(
                    client,
                    make_event(
                        "customer.updated",
                        customer(name=name, livemode=True),
                        created=T0,
                        livemode=True,
                    ),
                )
        row = await rows.get(Customer, "cus_1")
        assert (row.deleted, row.livemode) == (True, True)

    async def test_accepted_other_mode_tie_is_settled_without_stripe(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        # A test key cannot see live objects: asking Stripe would answer 404 and tombstone
        # a live subscription that exists.
        stripe_mock.get("/v1/subscriptions/sub_1").respond(
            404,
            json={"error": {"type": "invalid_request_error", "code": "resource_missing"}},
        )
        events = [
            make_event(
                "customer.subscription.updated",
                subscription(livemode=True, metadata={"v": v}),
                created=T0,
                livemode=True,
            )
            for v in ("1", "2")
        ]
        async with stripe_client(accept_other_mode_events=True) as client:
            responses = [await send(client, event) for event in events]
        assert [(r.status_code, r.json()["status"]) for r in responses] == [(200, "processed")] * 2
        assert [(await rows.event(e["id"])).status for e in events] == ["processed"] * 2
        row = await rows.get(Subscription, "sub_1")
        assert (row.deleted, row.raw["metadata"], row.livemode) == (False, {"v": "2"}, True)


class TestEventDuringRefetch:
    """A re-fetch stamped in the same second as an event applied while Stripe was being
    asked: which is newer is unknown, so the fetch may not overwrite the event."""

    async def test_fetch_older_than_a_same_second_event_does_not_undo_it(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        during = sub_event(created=T0 + 3, status="active", metadata={"v": "during"})
        answers = [
            # Served before `during` happened, in the same second.
            subscription(status="past_due", metadata={"v": "before"}),
            subscription(status="active", metadata={"v": "during"}),
        ]
        applied_during: list[str] = []

        async def stripe_answers(request: httpx.Request) -> httpx.Response:
            if not applied_during:
                # The event arrives while the tie's re-fetch is in flight: this also
                # proves nothing is locked across the Stripe call (it would deadlock).
                applied_during.append((await send(client, during)).json()["status"])
            body = answers.pop(0)
            return httpx.Response(200, json=body, headers={"Date": http_date(T0 + 3)})

        route = stripe_mock.get("/v1/subscriptions/sub_1")
        route.side_effect = stripe_answers
        async with stripe_client() as client:
            await send(client, sub_event(created=T0, metadata={"v": "1"}))
            tie = await send(client, sub_event(created=T0, metadata={"v": "2"}))
        assert applied_during == ["processed"]
        assert tie.json()["status"] == "processed"
        row = await rows.get(Subscription, "sub_1")
        assert (row.status, row.raw["metadata"]) == ("active", {"v": "during"})

    async def test_fetch_made_after_the_tie_was_seen_settles_it_in_its_second(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        # Nothing moved while Stripe was asked: its answer is newer than the row even
        # though it is stamped with the events' own second.
        route = stripe_mock.get("/v1/subscriptions/sub_1").respond(
            200, json=subscription(status="past_due"), headers={"Date": http_date(T0)}
        )
        async with stripe_client() as client:
            await send(client, sub_event(created=T0, metadata={"v": "1"}))
            await send(client, sub_event(created=T0, metadata={"v": "2"}))
        assert route.call_count == 1
        row = await rows.get(Subscription, "sub_1")
        assert (row.status, row.source_ts, row.source_event_id) == ("past_due", utc(T0), None)

    async def test_tie_left_open_by_every_answer_fails_until_redelivered(
        self, stripe_client: Callable[..., Any], rows: Any, stripe_mock: respx.MockRouter
    ) -> None:
        calls = 0

        async def stripe_answers(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            # During every fetch, a change lands in the very second Stripe answers in.
            second = T0 + 2 + calls
            during = sub_event(created=second, metadata={"v": f"during-{calls}"})
            assert (await send(client, during)).json()["status"] == "processed"
            body = subscription(status="past_due", metadata={"v": "stripe"})
            return httpx.Response(200, json=body, headers={"Date": http_date(second)})

        stripe_mock.get("/v1/subscriptions/sub_1").side_effect = stripe_answers
        tie = sub_event(created=T0, metadata={"v": "2"})
        async with stripe_client() as client:
            await send(client, sub_event(created=T0, metadata={"v": "1"}))
            failed = await send(client, tie)
            recorded = await rows.event(tie["id"])
            retried = await send(client, tie)
        assert (failed.status_code, failed.json()["code"]) == (500, "apply_failed")
        assert (recorded.status, recorded.last_error.split(":")[0]) == (
            "failed",
            "RefetchUnsettled",
        )
        assert calls == 3
        row = await rows.get(Subscription, "sub_1")
        assert (row.raw["metadata"], row.source_ts) == ({"v": "during-3"}, utc(T0 + 5))
        # By the redelivery the row has moved past the tie: it is stale, and settled.
        assert retried.json()["status"] == "stale"
        assert (await rows.event(tie["id"])).status == "processed"
