"""POST /admin/customers/{customer_id}/resync: one customer re-fetched from Stripe (faked at
the SDK's HTTP boundary) and applied through the webhooks' upsert path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import respx

from mirror.stripe_lists import StripeLists, error
from mirror.stripe_payloads import (
    customer,
    entitlement_summary,
    invoice,
    payment_method,
    subscription,
    tax_id,
    utc,
)
from portal_service.mirror.tables import (
    Customer,
    Entitlement,
    Invoice,
    PaymentMethod,
    Subscription,
    TaxId,
)
from support import admin_headers, backend_headers

T0 = 1_760_000_000
PATH = "/admin/customers/cus_1/resync"


@pytest.fixture
def lists(stripe_mock: respx.MockRouter) -> StripeLists:
    lists = StripeLists(stripe_mock, date=T0)
    lists.lists["/v1/customers"] = [customer(metadata={"app_user_id": "user_1"})]
    lists.lists["/v1/subscriptions"] = [
        subscription("sub_2", status="canceled"),
        subscription("sub_1"),
        subscription("sub_other", customer="cus_2"),
    ]
    lists.lists["/v1/invoices"] = [invoice("in_1"), invoice("in_other", customer="cus_2")]
    lists.lists["/v1/customers/cus_1/payment_methods"] = [payment_method()]
    lists.lists["/v1/customers/cus_1/tax_ids"] = [tax_id()]
    summary = entitlement_summary("cus_1", "pro", "api")
    lists.lists["/v1/entitlements/active_entitlements"] = [
        {**e, "customer": "cus_1"} for e in summary["entitlements"]["data"]
    ]
    return lists


@pytest.mark.sqlite
class TestResync:
    async def test_fetches_and_applies_everything_of_the_customer(
        self, stripe_client: Callable[..., Any], lists: StripeLists, rows: Any
    ) -> None:
        async with stripe_client() as client:
            response = await client.post(PATH, headers=admin_headers())
        assert response.status_code == 200
        assert response.json() == {
            "customer_id": "cus_1",
            "customers": 1,
            "subscriptions": 2,
            "payment_methods": 1,
            "invoices": 1,
            "tax_ids": 1,
            "entitlements": 2,
        }
        row = await rows.get(Customer, "cus_1")
        assert (row.source_ts, row.app_user_id) == (utc(T0), "user_1")
        assert {s.id for s in await rows.all(Subscription)} == {"sub_1", "sub_2"}
        assert await rows.get(Invoice, "in_1") is not None
        assert await rows.get(PaymentMethod, "pm_1") is not None
        assert await rows.get(TaxId, "txi_1") is not None
        assert {e.lookup_key for e in await rows.all(Entitlement, customer_id="cus_1")} == {
            "pro",
            "api",
        }
        # What the SDK sent: every subscription status, only this customer's objects.
        (subs,) = lists.sent("/v1/subscriptions")
        assert (subs.query["status"], subs.query["customer"]) == ("all", "cus_1")
        assert lists.sent("/v1/invoices")[0].query["customer"] == "cus_1"
        assert lists.sent("/v1/entitlements/active_entitlements")[0].query["customer"] == "cus_1"

    async def test_unknown_to_stripe_is_404_and_tombstones_a_mirrored_row(
        self, stripe_client: Callable[..., Any], lists: StripeLists, rows: Any, db: Any
    ) -> None:
        db.add(Customer(id="cus_gone", app_user_id="user_7"))
        await db.commit()
        async with stripe_client() as client:
            response = await client.post(
                "/admin/customers/cus_gone/resync", headers=admin_headers()
            )
            unknown = await client.post(
                "/admin/customers/cus_never/resync", headers=admin_headers()
            )
        assert response.status_code == 404
        assert response.json()["code"] == "customer_not_found"
        row = await rows.get(Customer, "cus_gone")
        assert (row.deleted, row.app_user_id) == (True, None)
        assert unknown.status_code == 404
        assert await rows.get(Customer, "cus_never") is None  # nothing invented

    async def test_customer_deleted_in_stripe_is_404_and_tombstoned(
        self, stripe_client: Callable[..., Any], lists: StripeLists, rows: Any
    ) -> None:
        lists.deleted["cus_del"] = {"id": "cus_del", "object": "customer", "deleted": True}
        async with stripe_client() as client:
            response = await client.post("/admin/customers/cus_del/resync", headers=admin_headers())
        assert response.status_code == 404
        assert (await rows.get(Customer, "cus_del")).deleted is True
        assert not lists.sent("/v1/subscriptions")

    async def test_needs_an_admin_key(
        self, stripe_client: Callable[..., Any], lists: StripeLists
    ) -> None:
        async with stripe_client() as client:
            anonymous = await client.post(PATH)
            backend = await client.post(PATH, headers=backend_headers())
        assert anonymous.status_code == 401
        assert backend.status_code == 403
        assert lists.requests == []

    async def test_rate_limited_by_stripe_is_503_with_retry_after(
        self, stripe_client: Callable[..., Any], lists: StripeLists, rows: Any
    ) -> None:
        lists.fail(
            lambda sent: sent.path == "/v1/invoices", error(429, **{"Retry-After": "4"}), times=1
        )
        async with stripe_client() as client:
            limited = await client.post(PATH, headers=admin_headers())
            again = await client.post(PATH, headers=admin_headers())
        assert limited.status_code == 503
        assert limited.json()["code"] == "stripe_unavailable"
        assert limited.headers["Retry-After"] == "4"
        # What was fetched before the 429 is applied; the retry completes the rest.
        assert await rows.get(Subscription, "sub_1") is not None
        assert again.status_code == 200
        assert again.json()["invoices"] == 1

    async def test_stripe_refusal_is_502(
        self, stripe_client: Callable[..., Any], lists: StripeLists
    ) -> None:
        lists.fail(lambda sent: sent.path == "/v1/customers/cus_1", error(400, code="bad"))
        async with stripe_client() as client:
            response = await client.post(PATH, headers=admin_headers())
        assert response.status_code == 502
        assert response.json()["code"] == "stripe_error"


class TestResyncOffline:
    async def test_offline_mode_has_no_stripe_customer(self, client: Any) -> None:
        response = await client.post(PATH, headers=admin_headers())
        assert response.status_code == 404
        assert response.json()["code"] == "customer_not_found"
