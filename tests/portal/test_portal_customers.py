"""Customers behind portal sessions: one per user even when first visits race, and
PUT/DELETE /users/{app_user_id}/customer to link and unlink existing customers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from portal.fakes import Mirror, StripeFake
from portal_service.mirror.tables import Customer, PortalSession
from support import admin_headers, backend_headers, user_headers


class TestConcurrentFirstVisits:
    async def test_ten_concurrent_first_visits_create_one_stripe_customer(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        async with stripe_client(rate_limit_portal_sessions="100/minute") as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/portal-sessions", headers=user_headers("user_1", email="a@example.com")
                    )
                    for _ in range(10)
                )
            )

        assert [r.status_code for r in responses] == [201] * 10
        assert len(stripe_fake.customers) == 1  # Stripe made one customer
        (customer_id,) = stripe_fake.customers
        assert {r.json()["customer_id"] for r in responses} == {customer_id}
        (row,) = await mirror.all(Customer)
        assert (row.id, row.app_user_id) == (customer_id, "user_1")
        assert len(await mirror.all(PortalSession)) == 10
        # Every request asked with the same key: Stripe's replay is what made them agree.
        assert len({r.headers["Idempotency-Key"] for r in stripe_fake.customers_sent}) == 1

    @pytest.mark.sqlite
    async def test_concurrent_first_visits_in_offline_mode_share_one_customer(
        self, client: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        responses = await asyncio.gather(
            *(client.post("/portal-sessions", headers=user_headers("user_1")) for _ in range(5))
        )
        assert [r.status_code for r in responses] == [201] * 5
        assert len({r.json()["customer_id"] for r in responses}) == 1
        assert len(await mirror.all(Customer)) == 1

    async def test_a_customer_the_webhook_recorded_first_is_linked_not_duplicated(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        # Stripe answers with a customer whose customer.created event was applied already
        # (a replay within the idempotency window): the existing row gets the link.
        first = await stripe_app.post("/portal-sessions", headers=user_headers("user_1"))
        customer_id = first.json()["customer_id"]
        await mirror.update(Customer, customer_id, app_user_id=None, raw={"id": customer_id})
        second = await stripe_app.post("/portal-sessions", headers=user_headers("user_1"))
        assert second.json()["customer_id"] == customer_id
        (row,) = await mirror.all(Customer)
        assert row.app_user_id == "user_1"


class TestLinkUserCustomer:
    async def test_links_a_mirrored_customer(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1", email="ada@example.com")
        response = await stripe_app.put(
            "/users/user_1/customer", headers=backend_headers(), json={"customer_id": "cus_1"}
        )
        assert response.status_code == 200
        assert response.json() == {
            "app_user_id": "user_1",
            "customer_id": "cus_1",
            "email": "ada@example.com",
            "livemode": False,
            "previous_customer_id": None,
        }
        assert (await mirror.get(Customer, "cus_1")).app_user_id == "user_1"
        assert stripe_fake.requests == []

    async def test_links_a_customer_only_stripe_knows_and_mirrors_it(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        stripe_fake.customers["cus_new"] = StripeFake.customer_object(
            "cus_new", email="new@example.com"
        )
        response = await stripe_app.put(
            "/users/user_1/customer", headers=admin_headers(), json={"customer_id": "cus_new"}
        )
        assert response.status_code == 200
        row = await mirror.get(Customer, "cus_new")
        assert (row.app_user_id, row.email) == ("user_1", "new@example.com")
        assert row.raw["id"] == "cus_new"
        assert row.stripe_created is not None
        # Applied as a fetch: stamped, so an older event cannot roll it back.
        assert row.source_ts is not None
        assert row.source_event_id is None

    async def test_the_linked_customer_serves_the_users_next_session(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1")
        await stripe_app.put(
            "/users/user_1/customer", headers=backend_headers(), json={"customer_id": "cus_1"}
        )
        response = await stripe_app.post("/portal-sessions", headers=user_headers("user_1"))
        assert response.json()["customer_id"] == "cus_1"
        assert stripe_fake.customers_sent == []

    @pytest.mark.sqlite
    async def test_linking_again_is_idempotent(
        self, client: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1", app_user_id="user_1")
        response = await client.put(
            "/users/user_1/customer", headers=backend_headers(), json={"customer_id": "cus_1"}
        )
        assert response.status_code == 200
        assert response.json()["previous_customer_id"] is None

    @pytest.mark.sqlite
    async def test_a_user_linked_elsewhere_is_moved_and_the_old_customer_kept(
        self, client: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_old", app_user_id="user_1")
        await mirror.customer("cus_new")
        response = await client.put(
            "/users/user_1/customer", headers=backend_headers(), json={"customer_id": "cus_new"}
        )
        assert response.status_code == 200
        assert response.json()["previous_customer_id"] == "cus_old"
        old = await mirror.get(Customer, "cus_old")
        assert (old.app_user_id, old.deleted) == (None, False)
        assert (await mirror.get(Customer, "cus_new")).app_user_id == "user_1"

    @pytest.mark.sqlite
    async def test_a_customer_linked_to_another_user_is_a_conflict(
        self, client: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1", app_user_id="user_2")
        response = await client.put(
            "/users/user_1/customer", headers=backend_headers(), json={"customer_id": "cus_1"}
        )
        assert response.status_code == 409
        assert response.json()["code"] == "customer_already_linked"
        assert (await mirror.get(Customer, "cus_1")).app_user_id == "user_2"

    @pytest.mark.parametrize(
        "state", ["deleted", "other_mode", "connect_account", "stripe_404", "stripe_deleted"]
    )
    async def test_a_customer_not_live_in_this_mode_is_not_found(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror, state: str
    ) -> None:
        if state == "deleted":
            await mirror.customer("cus_1", deleted=True)
        elif state == "other_mode":
            await mirror.customer("cus_1", livemode=True)
        elif state == "connect_account":
            await mirror.customer("cus_1", account="acct_1")
        elif state == "stripe_deleted":
            stripe_fake.customers["cus_1"] = {"id": "cus_1", "object": "customer", "deleted": True}
        response = await stripe_app.put(
            "/users/user_1/customer", headers=backend_headers(), json={"customer_id": "cus_1"}
        )
        assert response.status_code == 404
        assert response.json()["code"] == "customer_not_found"

    @pytest.mark.sqlite
    @pytest.mark.parametrize(
        "body", [{}, {"customer_id": "sub_1"}, {"customer_id": "cus_1", "extra": 1}]
    )
    async def test_a_malformed_body_is_invalid_request(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        response = await client.put("/users/user_1/customer", headers=backend_headers(), json=body)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    @pytest.mark.sqlite
    async def test_an_end_user_token_is_forbidden(self, client: httpx.AsyncClient) -> None:
        response = await client.put(
            "/users/user_1/customer", headers=user_headers("user_1"), json={"customer_id": "cus_1"}
        )
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"


class TestUnlinkUserCustomer:
    @pytest.mark.sqlite
    async def test_unlinks_and_keeps_the_customer(
        self, client: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1", app_user_id="user_1")
        response = await client.delete("/users/user_1/customer", headers=backend_headers())
        assert response.status_code == 204
        assert response.content == b""
        row = await mirror.get(Customer, "cus_1")
        assert (row.app_user_id, row.deleted) == (None, False)

    @pytest.mark.sqlite
    async def test_a_user_without_a_customer_is_not_found(self, client: httpx.AsyncClient) -> None:
        response = await client.delete("/users/user_1/customer", headers=backend_headers())
        assert response.status_code == 404
        assert response.json()["code"] == "customer_not_found"

    async def test_the_next_visit_after_unlinking_creates_a_new_customer(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        first = await stripe_app.post("/portal-sessions", headers=user_headers("user_1"))
        await stripe_app.delete("/users/user_1/customer", headers=backend_headers())
        second = await stripe_app.post("/portal-sessions", headers=user_headers("user_1"))
        assert second.json()["customer_id"] != first.json()["customer_id"]
        generations = [
            r.headers["Idempotency-Key"].rsplit(":", 1)[1] for r in stripe_fake.customers_sent
        ]
        assert generations == ["0", "1"]

    @pytest.mark.sqlite
    @pytest.mark.parametrize("how", ["unlinked", "deleted"])
    async def test_offline_mode_gives_a_new_customer_after_unlinking_or_deletion(
        self, client: httpx.AsyncClient, mirror: Mirror, how: str
    ) -> None:
        # The generation count reads the metadata kept in `raw`, on either database.
        first = await client.post("/portal-sessions", headers=user_headers("user_1"))
        old = first.json()["customer_id"]
        if how == "unlinked":
            await client.delete("/users/user_1/customer", headers=backend_headers())
        else:
            await mirror.update(Customer, old, deleted=True, app_user_id=None)
        second = await client.post("/portal-sessions", headers=user_headers("user_1"))
        assert second.json()["customer_id"] != old
        assert (await mirror.get(Customer, old)).app_user_id is None

    @pytest.mark.sqlite
    async def test_without_credentials_is_unauthenticated(self, client: httpx.AsyncClient) -> None:
        response = await client.delete("/users/user_1/customer")
        assert response.status_code == 401
