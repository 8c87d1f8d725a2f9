"""The caller's own billing state: /me, /me/subscriptions, /me/invoices, /me/payment-methods."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from support import backend_headers, user_headers

if TYPE_CHECKING:
    from conftest import MirrorRows


def me() -> dict[str, str]:
    return user_headers("user_a")


def at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


async def read_pages(client: httpx.AsyncClient, url: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        response = await client.get(url, params=params, headers=me())
        assert response.status_code == 200, response.text
        pages.append([entry["id"] for entry in response.json()["data"]])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20


class TestMeRoute:
    @pytest.mark.sqlite
    async def test_returns_the_linked_customer(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        customer = await rows.customer(
            address={"line1": "1 Main St", "city": "Berlin", "country": "DE", "extra": "x"},
            default_payment_method="pm_a",
            raw={"id": "cus_a", "metadata": {"secret": "do not show"}},
        )
        response = await client.get("/me", headers=me())
        assert response.status_code == 200
        assert response.json() == {
            "id": "cus_a",
            "email": "user_a@example.com",
            "name": "Ada Lovelace",
            "address": {
                "line1": "1 Main St",
                "line2": None,
                "city": "Berlin",
                "state": None,
                "postal_code": None,
                "country": "DE",
            },
            "preferred_locales": ["en"],
            "tax_exempt": "none",
            "default_payment_method": "pm_a",
            "livemode": False,
            "created_at": response.json()["created_at"],
            "tax_ids": [],
        }
        assert at(response.json()["created_at"]) == customer.stripe_created
        assert "do not show" not in response.text

    @pytest.mark.sqlite
    async def test_lists_live_tax_ids(self, client: httpx.AsyncClient, rows: MirrorRows) -> None:
        await rows.customer()
        await rows.tax_id("txi_1")
        await rows.tax_id("txi_gone", deleted=True)
        await rows.tax_id("txi_2", type="gb_vat", value="GB123", verification_status="pending")
        response = await client.get("/me", headers=me())
        assert response.json()["tax_ids"] == [
            {
                "id": "txi_1",
                "type": "eu_vat",
                "value": "DE123456789",
                "verification_status": "verified",
            },
            {"id": "txi_2", "type": "gb_vat", "value": "GB123", "verification_status": "pending"},
        ]

    async def test_empty_fields_read_as_nulls_and_empty_lists(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer(email=None, name=None, preferred_locales=None, tax_exempt=None)
        data = (await client.get("/me", headers=me())).json()
        assert (data["email"], data["name"], data["address"]) == (None, None, None)
        assert data["preferred_locales"] == []

    @pytest.mark.sqlite
    async def test_user_without_customer_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/me", headers=user_headers("nobody"))
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "customer_not_found"

    async def test_needs_an_end_user_token(self, client: httpx.AsyncClient) -> None:
        anonymous = await client.get("/me")
        with_api_key = await client.get("/me", headers=backend_headers())
        expired = await client.get("/me", headers=user_headers("user_a", exp=1))
        assert anonymous.status_code == 401
        assert with_api_key.status_code == 403
        assert expired.status_code == 401


class TestMySubscriptionsRoute:
    @pytest.mark.sqlite
    async def test_lists_all_newest_first_canceled_included(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.subscription(
            "sub_old", status="canceled", ended_at=rows.now - timedelta(days=40)
        )
        await rows.subscription("sub_expired", status="incomplete_expired")
        await rows.subscription("sub_new")
        response = await client.get("/me/subscriptions", headers=me())
        assert response.status_code == 200
        assert [s["id"] for s in response.json()["data"]] == ["sub_new", "sub_expired", "sub_old"]
        assert response.json()["next_cursor"] is None

    @pytest.mark.sqlite
    async def test_shows_items_periods_and_state(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        trial_end = rows.now + timedelta(days=7)
        resumes = rows.now + timedelta(days=14)
        await rows.subscription(
            status="trialing",
            trial_start=rows.now - timedelta(days=7),
            trial_end=trial_end,
            cancel_at_period_end=True,
            pause_collection_behavior="void",
            pause_resumes_at=resumes,
            items=[
                {
                    "price_id": "price_pro",
                    "product_id": "prod_pro",
                    "quantity": 3,
                    "interval": "year",
                }
            ],
        )
        sub = (await client.get("/me/subscriptions", headers=me())).json()["data"][0]
        assert sub["status"] == "trialing"
        assert at(sub["trial_end"]) == trial_end
        assert sub["cancel_at_period_end"] is True
        assert at(sub["access_until"]) == rows.now + timedelta(days=20)
        assert sub["pause_collection"]["behavior"] == "void"
        assert at(sub["pause_collection"]["resumes_at"]) == resumes
        # Collection paused: no access under the default policy.
        assert sub["has_access"] is False
        assert sub["collection_method"] == "charge_automatically"
        assert sub["schedule_id"] is None
        assert [
            {
                k: item[k]
                for k in (
                    "id",
                    "price_id",
                    "product_id",
                    "quantity",
                    "usage_type",
                    "interval",
                    "tax_behavior",
                )
            }
            for item in sub["items"]
        ] == [
            {
                "id": "si_sub_a_0",
                "price_id": "price_pro",
                "product_id": "prod_pro",
                "quantity": 3,
                "usage_type": "licensed",
                "interval": "year",
                "tax_behavior": "exclusive",
            }
        ]
        assert at(sub["items"][0]["current_period_end"]) == rows.now + timedelta(days=20)
        assert set(sub) == {
            "id", "status", "items", "current_period_start", "current_period_end", "trial_start",
            "trial_end", "cancel_at_period_end", "cancel_at", "canceled_at", "ended_at",
            "pause_collection", "collection_method", "schedule_id", "created_at", "has_access",
            "access_until", "portal",
        }  # fmt: skip

    async def test_ongoing_subscription_has_access_and_no_end(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.subscription()
        sub = (await client.get("/me/subscriptions", headers=me())).json()["data"][0]
        assert sub["has_access"] is True
        assert sub["access_until"] is None
        assert sub["pause_collection"] is None

    @pytest.mark.parametrize(
        ("fields", "items", "portal"),
        [
            pytest.param(
                {}, None, {"can_update": True, "can_cancel": True, "reasons": []}, id="plain"
            ),
            pytest.param(
                {"schedule_id": "sub_sched_1"},
                None,
                {"can_update": False, "can_cancel": False, "reasons": ["has_schedule"]},
                id="schedule",
            ),
            pytest.param(
                {},
                [{"product_id": "prod_a"}, {"product_id": "prod_b", "price_id": "price_b"}],
                {"can_update": False, "can_cancel": True, "reasons": ["multiple_products"]},
                id="two_products",
            ),
            pytest.param(
                {},
                [{"usage_type": "metered", "quantity": None}],
                {"can_update": False, "can_cancel": True, "reasons": ["usage_based"]},
                id="metered",
            ),
            pytest.param(
                {"collection_method": "send_invoice"},
                None,
                {"can_update": False, "can_cancel": True, "reasons": ["send_invoice"]},
                id="send_invoice",
            ),
            pytest.param(
                {"status": "canceled"},
                None,
                {"can_update": False, "can_cancel": False, "reasons": ["not_active"]},
                id="canceled",
            ),
            pytest.param(
                {"status": "active", "deleted": True},
                None,
                {"can_update": False, "can_cancel": False, "reasons": ["not_active"]},
                id="tombstoned",
            ),
            pytest.param(
                {"status": "incomplete_expired", "collection_method": "send_invoice"},
                None,
                {
                    "can_update": False,
                    "can_cancel": False,
                    "reasons": ["not_active", "send_invoice"],
                },
                id="several_reasons_in_order",
            ),
        ],
    )
    async def test_portal_capabilities_follow_the_documented_limitations(
        self,
        client: httpx.AsyncClient,
        rows: MirrorRows,
        fields: dict[str, Any],
        items: list[dict[str, Any]] | None,
        portal: dict[str, Any],
    ) -> None:
        await rows.customer()
        await rows.subscription(items=items, **fields)
        sub = (await client.get("/me/subscriptions", headers=me())).json()["data"][0]
        assert sub["portal"] == portal

    @pytest.mark.sqlite
    async def test_pages_through_with_cursors(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        for n in range(5):
            await rows.subscription(f"sub_{n}")
        pages = await read_pages(client, "/me/subscriptions", limit=2)
        assert pages == [["sub_4", "sub_3"], ["sub_2", "sub_1"], ["sub_0"]]

    async def test_default_page_is_20(self, client: httpx.AsyncClient, rows: MirrorRows) -> None:
        await rows.customer()
        for n in range(21):
            await rows.subscription(f"sub_{n:02}", items=[])
        response = await client.get("/me/subscriptions", headers=me())
        assert len(response.json()["data"]) == 20
        assert response.json()["next_cursor"] is not None

    @pytest.mark.parametrize(
        "params",
        [
            pytest.param({"limit": 0}, id="limit_0"),
            pytest.param({"limit": 101}, id="limit_over_100"),
            pytest.param({"limit": "ten"}, id="limit_not_a_number"),
            pytest.param({"cursor": "%%%"}, id="cursor_garbage"),
            pytest.param({"cursor": ""}, id="cursor_empty"),
            pytest.param({"cursor": "x" * 600}, id="cursor_too_long"),
        ],
    )
    async def test_bad_paging_parameters_are_invalid_request(
        self, client: httpx.AsyncClient, rows: MirrorRows, params: dict[str, Any]
    ) -> None:
        await rows.customer()
        response = await client.get("/me/subscriptions", params=params, headers=me())
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    async def test_limit_100_is_allowed(self, client: httpx.AsyncClient, rows: MirrorRows) -> None:
        await rows.customer()
        response = await client.get("/me/subscriptions", params={"limit": 100}, headers=me())
        assert response.status_code == 200

    async def test_cursor_of_another_list_is_invalid_request(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.invoice("in_1")
        await rows.invoice("in_2")
        invoices = await client.get("/me/invoices", params={"limit": 1}, headers=me())
        cursor = invoices.json()["next_cursor"]
        response = await client.get("/me/subscriptions", params={"cursor": cursor}, headers=me())
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    async def test_user_without_customer_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/me/subscriptions", headers=user_headers("nobody"))
        assert response.status_code == 404
        assert response.json()["code"] == "customer_not_found"


class TestMyInvoicesRoute:
    @pytest.mark.sqlite
    async def test_lists_newest_first_without_deleted(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        paid_at = rows.now - timedelta(days=1)
        await rows.invoice("in_1", subscription_id="sub_a", paid_at=paid_at)
        await rows.invoice("in_draft_deleted", status="draft", deleted=True)
        await rows.invoice(
            "in_2",
            status="open",
            amount_paid=0,
            hosted_invoice_url="https://invoice.stripe.com/i/2",
        )
        response = await client.get("/me/invoices", headers=me())
        assert response.status_code == 200
        data = response.json()["data"]
        assert [i["id"] for i in data] == ["in_2", "in_1"]
        first = data[1]
        assert {k: v for k, v in first.items() if k not in ("created_at", "paid_at")} == {
            "id": "in_1",
            "status": "paid",
            "currency": "eur",
            "amount_due": 1200,
            "amount_paid": 1200,
            "hosted_invoice_url": "https://invoice.stripe.com/i/in_1",
            "subscription_id": "sub_a",
        }
        assert at(first["paid_at"]) == paid_at
        assert at(first["created_at"]) is not None
        assert data[0]["hosted_invoice_url"] == "https://invoice.stripe.com/i/2"

    async def test_same_second_invoices_order_by_id(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        created = rows.now - timedelta(days=3)
        for invoice_id in ("in_b", "in_c", "in_a"):
            await rows.invoice(invoice_id, stripe_created=created)
        pages = await read_pages(client, "/me/invoices", limit=1)
        assert pages == [["in_c"], ["in_b"], ["in_a"]]

    async def test_user_without_customer_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/me/invoices", headers=user_headers("nobody"))
        assert response.status_code == 404


class TestMyPaymentMethodsRoute:
    @pytest.mark.sqlite
    async def test_lists_attached_methods_with_the_default_marked(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer(default_payment_method="pm_default")
        await rows.payment_method("pm_default", card_brand="mastercard", card_last4="4444")
        await rows.payment_method("pm_other")
        await rows.payment_method("pm_detached", customer_id=None)
        await rows.payment_method(
            "pm_sepa",
            type="sepa_debit",
            card_brand=None,
            card_last4=None,
            card_exp_month=None,
            card_exp_year=None,
        )
        response = await client.get("/me/payment-methods", headers=me())
        assert response.status_code == 200
        data = {pm["id"]: pm for pm in response.json()["data"]}
        assert list(data) == ["pm_sepa", "pm_other", "pm_default"]
        assert data["pm_default"]["is_default"] is True
        assert data["pm_other"]["is_default"] is False
        assert data["pm_default"]["card"] == {
            "brand": "mastercard",
            "last4": "4444",
            "exp_month": 12,
            "exp_year": 2030,
        }
        assert data["pm_sepa"]["card"] is None
        assert data["pm_sepa"]["type"] == "sepa_debit"
        assert set(data["pm_default"]) == {"id", "type", "card", "is_default", "created_at"}

    async def test_no_default_marks_none(self, client: httpx.AsyncClient, rows: MirrorRows) -> None:
        await rows.customer(default_payment_method=None)
        await rows.payment_method("pm_1")
        data = (await client.get("/me/payment-methods", headers=me())).json()["data"]
        assert [pm["is_default"] for pm in data] == [False]

    async def test_pages_through_with_cursors(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        for n in range(3):
            await rows.payment_method(f"pm_{n}")
        assert await read_pages(client, "/me/payment-methods", limit=2) == [
            ["pm_2", "pm_1"],
            ["pm_0"],
        ]

    async def test_user_without_customer_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/me/payment-methods", headers=user_headers("nobody"))
        assert response.status_code == 404
