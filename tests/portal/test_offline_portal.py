"""Offline mode end to end: no Stripe key, a user's first visit creates a local customer
and session, and the session URL opens a page of the mirrored billing state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from portal.fakes import Mirror
from portal_service.mirror.tables import Customer, Invoice, PaymentMethod
from support import user_headers

SERVED_AT = "http://billing.internal.test:9000"


async def _open_portal(client: httpx.AsyncClient, url: str) -> httpx.Response:
    # The link points at the service that created it: the client's own base URL here.
    assert url.startswith(str(client.base_url).rstrip("/") + "/offline/portal/")
    return await client.get(url)


@asynccontextmanager
async def served_at(
    app: FastAPI, base_url: str, *, root_path: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    """A second client on the same running app, reaching it at another address."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as other:
        yield other


@pytest.mark.sqlite
class TestOfflinePortal:
    async def test_first_visit_opens_a_page_of_the_mirrored_state(
        self, client: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        created = await client.post(
            "/portal-sessions",
            headers=user_headers("user_1", email="ada@example.com"),
            json={"return_url": "https://app.example.com/account/billing"},
        )
        assert created.status_code == 201
        body = created.json()
        assert body["customer_id"].startswith("cus_offline_")
        assert body["livemode"] is False
        (customer,) = await mirror.all(Customer)
        assert customer.app_user_id == "user_1"

        await mirror.subscription(
            "sub_1",
            customer_id=body["customer_id"],
            items=[{"id": "si_1", "product_id": "prod_pro", "price_id": "price_pro"}],
        )
        await mirror.add(
            PaymentMethod(
                id="pm_1",
                customer_id=body["customer_id"],
                type="card",
                card_brand="visa",
                card_last4="4242",
                card_exp_month=4,
                card_exp_year=2031,
            ),
            Invoice(
                id="in_1",
                customer_id=body["customer_id"],
                status="paid",
                currency="eur",
                amount_due=1250,
                stripe_created=datetime(2026, 10, 1, tzinfo=UTC),
            ),
        )

        page = await _open_portal(client, body["url"])

        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        html = page.text
        for expected in (
            body["customer_id"],
            "ada@example.com",
            "sub_1",
            "active",
            "prod_pro",
            "visa",
            "4242",
            "04/2031",
            "in_1",
            "12.50 EUR",
            "href='https://app.example.com/account/billing'",
        ):
            assert expected in html

    async def test_the_link_points_at_the_host_and_port_that_served_the_request(
        self, client: httpx.AsyncClient
    ) -> None:
        app: FastAPI = client.app  # type: ignore[attr-defined]
        async with served_at(app, SERVED_AT) as elsewhere:
            created = await elsewhere.post("/portal-sessions", headers=user_headers("user_1"))
            assert created.status_code == 201
            url = created.json()["url"]
            assert url.startswith(SERVED_AT + "/offline/portal/")
            page = await elsewhere.get(url)
        assert page.status_code == 200
        assert created.json()["customer_id"] in page.text

    async def test_the_link_keeps_the_root_path_the_service_is_mounted_under(
        self, client: httpx.AsyncClient
    ) -> None:
        app: FastAPI = client.app  # type: ignore[attr-defined]
        async with served_at(app, SERVED_AT, root_path="/billing-api") as proxied:
            created = await proxied.post("/portal-sessions", headers=user_headers("user_1"))
        assert created.status_code == 201
        assert created.json()["url"].startswith(SERVED_AT + "/billing-api/offline/portal/")

    async def test_a_replay_points_at_the_host_that_served_the_replay(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = {**user_headers("user_1"), "Idempotency-Key": "k1"}
        first = await client.post("/portal-sessions", headers=headers)
        app: FastAPI = client.app  # type: ignore[attr-defined]
        async with served_at(app, SERVED_AT) as elsewhere:
            replay = await elsewhere.post("/portal-sessions", headers=headers)
            page = await elsewhere.get(replay.json()["url"])
        assert replay.status_code == 201
        assert replay.json()["id"] == first.json()["id"]
        assert urlsplit(replay.json()["url"]).path == urlsplit(first.json()["url"]).path
        assert replay.json()["url"].startswith(SERVED_AT + "/offline/portal/")
        assert page.status_code == 200

    async def test_mirrored_text_is_escaped(
        self, client: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        created = await client.post("/portal-sessions", headers=user_headers("user_1"))
        customer_id = created.json()["customer_id"]
        await mirror.update(Customer, customer_id, name="<script>alert(1)</script>")
        page = await _open_portal(client, created.json()["url"])
        assert "<script>alert(1)" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text

    @pytest.mark.parametrize(
        "token",
        ["nonsense", "eyJjIjoiY3VzXzEifQ.0123456789abcdef0123456789abcdef", "a.b", "x" * 5000],
        ids=["garbage", "bad-signature", "short", "huge"],
    )
    async def test_a_bad_link_is_a_not_found_problem(
        self, client: httpx.AsyncClient, token: str
    ) -> None:
        response = await client.get(f"/offline/portal/{token}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"

    async def test_a_tampered_link_is_refused(self, client: httpx.AsyncClient) -> None:
        created = await client.post("/portal-sessions", headers=user_headers("user_1"))
        path = urlsplit(created.json()["url"]).path
        body, mac = path.rsplit("/", 1)[1].split(".")
        forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
        response = await client.get(f"/offline/portal/{forged}.{mac}")
        assert response.status_code == 404

    async def test_the_page_is_not_part_of_the_api_document(
        self, client: httpx.AsyncClient
    ) -> None:
        spec = (await client.get("/openapi.json")).json()
        assert not any(path.startswith("/offline") for path in spec["paths"])

    async def test_links_are_not_served_when_stripe_is_connected(
        self, client: httpx.AsyncClient, client_factory: Callable[..., Any]
    ) -> None:
        created = await client.post("/portal-sessions", headers=user_headers("user_1"))
        async with client_factory(stripe_api_key="sk_test_123") as online:
            response = await online.get(urlsplit(created.json()["url"]).path)
        assert response.status_code == 404
