"""POST /webhooks: signature checks, body limits, what gets recorded and how it is answered."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from mirror.stripe_payloads import SESSION_URL, customer, portal_session, subscription
from portal_service.mirror.signatures import sign
from portal_service.mirror.tables import (
    Customer,
    PortalSession,
    StripeEvent,
    Subscription,
    SubscriptionItem,
)
from support import WEBHOOK_SECRET, admin_headers, deliver, make_event, signed_headers

OTHER_SECRET = "whsec_test_secret_two"


def body_of(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


async def post(client: httpx.AsyncClient, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await client.post("/webhooks", content=body, headers=headers)


def v1(body: bytes, secret: str, timestamp: int) -> str:
    return sign(body, secret, timestamp=timestamp).split(",")[1]


def sample(default: float | None) -> float:
    return default or 0.0


def events_metric(event_type: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "portal_webhook_events_total", {"type": event_type, "result": result}
    )
    return value or 0.0


@pytest.mark.sqlite
class TestWebhookSignature:
    async def test_valid_signature_is_accepted_and_recorded(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        event = make_event("customer.created", customer())
        response = await deliver(client, event)
        assert response.status_code == 200
        assert response.json() == {"received": True, "status": "processed"}
        assert (await rows.event(event["id"])).status == "processed"

    async def test_rotation_header_with_two_v1_signatures_is_accepted(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        event = make_event("customer.created", customer())
        body = body_of(event)
        now = int(time.time())
        header = f"t={now},{v1(body, OTHER_SECRET, now)},{v1(body, WEBHOOK_SECRET, now)}"
        response = await post(client, body, header)
        assert response.json() == {"received": True, "status": "processed"}
        assert (await rows.event(event["id"])).status == "processed"

    async def test_every_configured_secret_is_tried(
        self, client_factory: Callable[..., Any], rows: Any
    ) -> None:
        event = make_event("customer.created", customer())
        body = body_of(event)
        secrets = f"{OTHER_SECRET},{WEBHOOK_SECRET}"
        async with client_factory(stripe_webhook_secrets=secrets) as client:
            first = await post(client, body, sign(body, OTHER_SECRET, timestamp=int(time.time())))
            second = await post(
                client, body, sign(body, WEBHOOK_SECRET, timestamp=int(time.time()))
            )
        assert first.json() == {"received": True, "status": "processed"}
        assert second.json()["status"] == "duplicate"
        recorded = await rows.event(event["id"])
        assert (recorded.status, recorded.attempts) == ("processed", 1)

    @pytest.mark.parametrize(
        "make_header",
        [
            pytest.param(
                lambda body, now: f"t={now},v0={v1(body, WEBHOOK_SECRET, now)[3:]}", id="v0-only"
            ),
            pytest.param(
                lambda body, now: sign(body, OTHER_SECRET, timestamp=now), id="wrong-secret"
            ),
            pytest.param(
                lambda body, now: sign(body, WEBHOOK_SECRET, timestamp=now + 600),
                id="ten-minutes-ahead",
            ),
            pytest.param(
                lambda body, now: sign(body, WEBHOOK_SECRET, timestamp=now - 600),
                id="ten-minutes-old",
            ),
            pytest.param(
                lambda body, now: sign(body + b" ", WEBHOOK_SECRET, timestamp=now),
                id="other-body",
            ),
            pytest.param(lambda body, now: "garbled", id="garbled"),
            pytest.param(lambda body, now: f"t=soon,{v1(body, WEBHOOK_SECRET, now)}", id="bad-t"),
            pytest.param(lambda body, now: None, id="missing"),
        ],
    )
    async def test_unverified_bodies_are_refused_and_not_recorded(
        self,
        client: httpx.AsyncClient,
        rows: Any,
        make_header: Callable[[bytes, int], str | None],
    ) -> None:
        event = make_event("customer.created", customer())
        body = body_of(event)
        response = await post(client, body, make_header(body, int(time.time())))
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "invalid_signature"
        assert await rows.get(StripeEvent, event["id"]) is None

    async def test_tolerance_comes_from_settings(
        self, client_factory: Callable[..., Any], rows: Any
    ) -> None:
        event = make_event("customer.created", customer())
        body = body_of(event)
        header = sign(body, WEBHOOK_SECRET, timestamp=int(time.time()) - 100)
        async with client_factory(stripe_webhook_tolerance=60) as client:
            response = await post(client, body, header)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_signature")
        assert await rows.get(StripeEvent, event["id"]) is None

    async def test_no_secret_configured_is_503(
        self, client_factory: Callable[..., Any], rows: Any
    ) -> None:
        body = body_of(make_event("customer.created", customer()))
        async with client_factory(stripe_webhook_secrets="") as client:
            response = await post(
                client, body, sign(body, WEBHOOK_SECRET, timestamp=int(time.time()))
            )
        assert response.status_code == 503
        assert response.json()["code"] == "webhooks_not_configured"
        assert await rows.count(StripeEvent) == 0


@pytest.mark.sqlite
class TestWebhookBody:
    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"{not json", id="malformed"),
            pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
            pytest.param(b"[1, 2]", id="array"),
            pytest.param(b'{"id": "evt_1", "object": "event"}', id="no-type"),
            pytest.param(
                b'{"id": "evt_1", "object": "customer", "type": "x", "created": 1, "data": {"object": {}}}',
                id="not-an-event-object",
            ),
            pytest.param(
                b'{"id": "evt_1", "type": "customer.created", "created": NaN, "data": {"object": {}}}',
                id="nan",
            ),
            pytest.param(
                b'{"id": "evt_1", "type": "customer.created", "created": "yesterday", "data": {"object": {}}}',
                id="bad-created",
            ),
            pytest.param(
                b'{"id": "evt_1", "object": "v2.core.event", "type": "v1.x", "created": "soon"}',
                id="thin-bad-created",
            ),
        ],
    )
    async def test_signed_but_not_an_event_is_invalid_payload(
        self, client: httpx.AsyncClient, rows: Any, body: bytes
    ) -> None:
        response = await client.post("/webhooks", content=body, headers=signed_headers(body))
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_payload"
        assert await rows.count(StripeEvent) == 0

    async def test_declared_oversized_body_is_refused_before_reading(
        self, client_factory: Callable[..., Any], rows: Any
    ) -> None:
        body = b"x" * 2048
        async with client_factory(webhook_max_body_bytes=1024) as client:
            response = await client.post("/webhooks", content=body, headers=signed_headers(body))
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_payload"
        assert "WEBHOOK_MAX_BODY_BYTES" in response.json()["detail"]
        assert await rows.count(StripeEvent) == 0

    async def test_streamed_oversized_body_is_refused(
        self, client_factory: Callable[..., Any], rows: Any
    ) -> None:
        body = body_of(make_event("customer.created", customer(name="x" * 4096)))

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 512):
                yield body[start : start + 512]

        async with client_factory(webhook_max_body_bytes=1024) as client:
            response = await client.post(
                "/webhooks", content=chunks(), headers=signed_headers(body)
            )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_payload"
        assert await rows.count(StripeEvent) == 0

    async def test_body_at_the_limit_is_accepted(
        self, client_factory: Callable[..., Any], rows: Any
    ) -> None:
        event = make_event("customer.created", customer(name="x" * 1024))
        body = body_of(event)
        async with client_factory(webhook_max_body_bytes=len(body)) as client:
            response = await client.post("/webhooks", content=body, headers=signed_headers(body))
        assert response.json() == {"received": True, "status": "processed"}
        assert (await rows.event(event["id"])).status == "processed"


@pytest.mark.sqlite
class TestEventRecording:
    async def test_unhandled_type_is_recorded_as_ignored(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        event = make_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
        response = await deliver(client, event)
        assert response.status_code == 200
        assert response.json()["status"] == "ignored"
        row = await rows.event(event["id"])
        assert (row.status, row.type, row.attempts) == ("ignored", "charge.succeeded", 0)
        assert row.processed_at is not None

    async def test_redelivered_ignored_event_is_a_duplicate(
        self, client: httpx.AsyncClient
    ) -> None:
        event = make_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
        await deliver(client, event)
        assert (await deliver(client, event)).json()["status"] == "duplicate"

    async def test_duplicate_of_processed_event_does_nothing(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        event = make_event("customer.subscription.updated", subscription())
        await deliver(client, event)
        first = await rows.get(Subscription, "sub_1")
        response = await deliver(client, event)
        assert response.json() == {"received": True, "status": "duplicate"}
        assert (await rows.event(event["id"])).attempts == 1
        assert (await rows.get(Subscription, "sub_1")).updated_at == first.updated_at

    async def test_event_columns_are_recorded(self, client: httpx.AsyncClient, rows: Any) -> None:
        event = make_event("customer.created", customer(), created=1_700_000_000)
        await deliver(client, event)
        row = await rows.event(event["id"])
        assert row.api_version == "2026-10-28.endive"
        assert row.created.timestamp() == 1_700_000_000
        assert row.created.tzinfo is not None
        assert row.received_at.tzinfo is not None
        assert row.livemode is False
        assert row.account == ""
        assert row.payload["data"]["object"]["email"] == "ada@example.com"

    async def test_other_mode_event_is_ignored(self, client: httpx.AsyncClient, rows: Any) -> None:
        event = make_event("customer.created", customer(livemode=True), livemode=True)
        response = await deliver(client, event)
        assert response.json()["status"] == "ignored"
        assert (await rows.event(event["id"])).status == "ignored"
        assert await rows.get(Customer, "cus_1") is None

    async def test_other_mode_event_is_applied_when_accepted(
        self, client_factory: Callable[..., Any], rows: Any
    ) -> None:
        event = make_event("customer.created", customer(livemode=True), livemode=True)
        async with client_factory(accept_other_mode_events=True) as client:
            response = await deliver(client, event)
        assert response.json()["status"] == "processed"
        assert (await rows.get(Customer, "cus_1")).livemode is True

    async def test_test_event_is_ignored_with_a_live_key(
        self, client_factory: Callable[..., Any], rows: Any
    ) -> None:
        event = make_event("customer.created", customer())
        async with client_factory(stripe_api_key="sk_live_123") as client:
            response = await deliver(client, event)
        assert response.json()["status"] == "ignored"
        assert await rows.get(Customer, "cus_1") is None

    async def test_thin_event_is_recorded_as_ignored(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        thin = {
            "id": "evt_test_65R9Ijk8",
            "object": "v2.core.event",
            "type": "v1.billing.meter.error_report_triggered",
            "livemode": False,
            "created": "2024-09-17T06:20:52.246Z",
            "related_object": {
                "id": "mtr_1",
                "type": "billing.meter",
                "url": "/v1/billing/meters/mtr_1",
            },
            "context": "acct_123",
        }
        body = json.dumps(thin).encode()
        response = await client.post("/webhooks", content=body, headers=signed_headers(body))
        assert response.json() == {"received": True, "status": "ignored"}
        row = await rows.event("evt_test_65R9Ijk8")
        assert (row.status, row.account) == ("ignored", "acct_123")
        assert row.created.year == 2024

    async def test_connect_account_is_stored_on_event_and_rows(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        event = make_event("customer.subscription.created", subscription(), account="acct_9")
        await deliver(client, event)
        assert (await rows.event(event["id"])).account == "acct_9"
        assert (await rows.get(Subscription, "sub_1")).account == "acct_9"
        items = await rows.all(SubscriptionItem)
        assert [item.account for item in items] == ["acct_9"]

    async def test_session_url_is_never_stored_nor_listed(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        event = make_event("billing_portal.session.created", portal_session())
        event["data"]["previous_attributes"] = {"url": SESSION_URL}
        response = await deliver(client, event)
        assert response.json()["status"] == "processed"
        recorded = await rows.event(event["id"])
        session_row = await rows.get(PortalSession, "bps_1")
        listed = await client.get("/admin/events", headers=admin_headers())
        for stored in (recorded.payload, session_row.raw, listed.json()):
            assert SESSION_URL not in json.dumps(stored)
        assert "url" not in recorded.payload["data"]["object"]
        assert session_row.raw["return_url"] == "https://app.example.com/account"

    async def test_session_url_is_dropped_even_without_an_object_key(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        obj = portal_session()
        del obj["object"]
        event = make_event("billing_portal.session.created", obj)
        assert (await deliver(client, event)).json()["status"] == "processed"
        recorded = await rows.event(event["id"])
        session_row = await rows.get(PortalSession, "bps_1")
        for stored in (recorded.payload, session_row.raw):
            assert SESSION_URL not in json.dumps(stored)
        assert session_row.locale == "fr"


class TestWebhookMetrics:
    async def test_results_are_counted_by_type(self, client: httpx.AsyncClient) -> None:
        kind = "customer.updated"
        before = {r: events_metric(kind, r) for r in ("processed", "duplicate", "stale")}
        newer = make_event(kind, customer(name="New"), created=2_000_000_100)
        older = make_event(kind, customer(name="Old"), created=2_000_000_000)
        await deliver(client, newer)
        await deliver(client, newer)
        await deliver(client, older)
        assert events_metric(kind, "processed") - before["processed"] == 1
        assert events_metric(kind, "duplicate") - before["duplicate"] == 1
        assert events_metric(kind, "stale") - before["stale"] == 1

    async def test_ignored_events_are_counted(self, client: httpx.AsyncClient) -> None:
        before = events_metric("product.created", "ignored")
        await deliver(client, make_event("product.created", {"id": "prod_1", "object": "product"}))
        assert events_metric("product.created", "ignored") - before == 1

    async def test_apply_latency_is_observed(self, client: httpx.AsyncClient) -> None:
        before = sample(REGISTRY.get_sample_value("portal_webhook_apply_seconds_count"))
        await deliver(client, make_event("customer.created", customer()))
        after = sample(REGISTRY.get_sample_value("portal_webhook_apply_seconds_count"))
        assert after - before == 1
