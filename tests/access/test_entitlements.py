"""Entitlements: the service's answer, its ETag and conditional requests, and the three routes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from portal_service.access.entitlements import (
    entitlements_etag,
    evaluate_entitlements,
    none_match_hits,
)
from portal_service.access.facts import customer_access
from portal_service.access.policy import AccessPolicy
from portal_service.access.schemas import EntitledProduct, Entitlements
from portal_service.mirror.tables import Customer
from support import admin_headers, backend_headers, user_headers

if TYPE_CHECKING:
    from conftest import MirrorRows

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def body(**changes: Any) -> Entitlements:
    values: dict[str, Any] = {
        "customer_id": "cus_a",
        "has_access": True,
        "products": [
            EntitledProduct(
                product_id="prod_basic",
                price_id="price_basic",
                subscription_id="sub_a",
                status="active",
                quantity=1,
                access_until=None,
            )
        ],
        "features": ["export"],
        "evaluated_at": NOW,
    }
    return Entitlements(**(values | changes))


ETAG = '"0123456789abcdef0123456789abcdef"'


@pytest.mark.sqlite
class TestNoneMatchHits:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            pytest.param(None, False, id="absent"),
            pytest.param(ETAG, True, id="same"),
            pytest.param(f"W/{ETAG}", True, id="weak_compares_equal"),
            pytest.param("*", True, id="star"),
            pytest.param(" * ", True, id="star_padded"),
            pytest.param(f'"other", {ETAG}', True, id="in_list"),
            pytest.param(f'"other",{ETAG}  ', True, id="in_list_no_space"),
            pytest.param(f'W/"x", , W/{ETAG}', True, id="empty_list_element"),
            pytest.param('"a,b", ' + ETAG, True, id="comma_inside_a_tag"),
            pytest.param('"other"', False, id="different"),
            pytest.param('"other", "another"', False, id="list_without_it"),
            pytest.param(ETAG.strip('"'), False, id="unquoted"),
            pytest.param(f"w/{ETAG}", False, id="lowercase_weak_prefix"),
            pytest.param(f'"{ETAG}', False, id="unbalanced_quote"),
            pytest.param(f'"other" {ETAG}', False, id="missing_comma"),
            pytest.param("", False, id="empty"),
            pytest.param('"other", *', False, id="star_inside_a_list"),
        ],
    )
    def test_matches_per_rfc_9110(self, header: str | None, expected: bool) -> None:
        assert none_match_hits(header, ETAG) is expected


@pytest.mark.sqlite
class TestEntitlementsEtag:
    def test_is_a_strong_quoted_tag(self) -> None:
        etag = entitlements_etag(body())
        assert etag.startswith('"')
        assert etag.endswith('"')
        assert not etag.startswith("W/")
        assert len(etag) == 34

    def test_ignores_evaluated_at(self) -> None:
        later = body(evaluated_at=NOW + timedelta(hours=5))
        assert entitlements_etag(later) == entitlements_etag(body())

    @pytest.mark.parametrize(
        "changes",
        [
            pytest.param({"features": ["export", "sso"]}, id="feature_added"),
            pytest.param({"products": [], "has_access": False}, id="access_lost"),
            pytest.param({"customer_id": "cus_b"}, id="other_customer"),
        ],
    )
    def test_changes_with_the_answer(self, changes: dict[str, Any]) -> None:
        assert entitlements_etag(body(**changes)) != entitlements_etag(body())

    def test_changes_when_a_product_gets_an_end(self) -> None:
        product = body().products[0].model_copy(update={"access_until": NOW})
        assert entitlements_etag(body(products=[product])) != entitlements_etag(body())


async def evaluate(
    db: AsyncSession, customer: Customer, *, policy: AccessPolicy, now: datetime
) -> Entitlements:
    """The answer for a customer row, read from the mirror the way the routes read it."""
    access = await customer_access(db, customer_id=customer.id, livemode=customer.livemode)
    return evaluate_entitlements(access, policy=policy, now=now)


class TestEvaluateEntitlements:
    def test_without_customer_is_the_empty_answer(self) -> None:
        answer = evaluate_entitlements(None, policy=AccessPolicy(), now=NOW)
        assert answer == Entitlements(customer_id=None, has_access=False, products=[], features=[])
        assert answer.evaluated_at is None

    @pytest.mark.sqlite
    async def test_lists_every_item_of_granting_subscriptions_only(
        self, db: AsyncSession, rows: MirrorRows
    ) -> None:
        customer = await rows.customer()
        await rows.subscription(
            "sub_team",
            items=[
                {"product_id": "prod_team", "price_id": "price_team", "quantity": 5},
                {"product_id": "prod_addon", "price_id": "price_addon", "quantity": 2},
            ],
        )
        await rows.subscription("sub_old", status="canceled", items=[{"product_id": "prod_old"}])
        await rows.subscription("sub_unpaid", status="unpaid", items=[{"product_id": "prod_x"}])
        answer = await evaluate(db, customer, policy=AccessPolicy(), now=rows.now)
        assert answer.has_access is True
        assert [
            (p.product_id, p.price_id, p.subscription_id, p.quantity) for p in answer.products
        ] == [
            ("prod_addon", "price_addon", "sub_team", 2),
            ("prod_team", "price_team", "sub_team", 5),
        ]

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            ("active", True),
            ("trialing", True),
            ("past_due", False),
            ("paused", False),
            ("unpaid", False),
            ("incomplete", False),
            ("incomplete_expired", False),
            ("canceled", False),
            ("a_status_from_the_future", False),
        ],
    )
    async def test_status_decides_has_access(
        self, db: AsyncSession, rows: MirrorRows, status: str, expected: bool
    ) -> None:
        customer = await rows.customer()
        await rows.subscription(status=status)
        answer = await evaluate(db, customer, policy=AccessPolicy(), now=rows.now)
        assert answer.has_access is expected
        assert len(answer.products) == (1 if expected else 0)

    async def test_past_due_grace_runs_from_the_oldest_unpaid_invoice(
        self, db: AsyncSession, rows: MirrorRows
    ) -> None:
        customer = await rows.customer()
        await rows.subscription(status="past_due")
        await rows.invoice(
            "in_late",
            subscription_id="sub_a",
            status="open",
            stripe_created=rows.now - timedelta(days=2),
        )
        in_grace = await evaluate(
            db, customer, policy=AccessPolicy(past_due_grace_days=3), now=rows.now
        )
        after_grace = await evaluate(
            db,
            customer,
            policy=AccessPolicy(past_due_grace_days=3),
            now=rows.now + timedelta(days=1),
        )
        assert in_grace.has_access is True
        assert after_grace.has_access is False

    async def test_scheduled_end_reports_access_until_and_then_stops_access(
        self, db: AsyncSession, rows: MirrorRows
    ) -> None:
        customer = await rows.customer()
        end = rows.now + timedelta(days=20)
        await rows.subscription(cancel_at_period_end=True, current_period_end=end)
        before = await evaluate(db, customer, policy=AccessPolicy(), now=rows.now)
        after = await evaluate(db, customer, policy=AccessPolicy(), now=end)
        assert [p.access_until for p in before.products] == [end]
        assert after.products == []

    async def test_paused_collection_grants_only_when_configured(
        self, db: AsyncSession, rows: MirrorRows
    ) -> None:
        customer = await rows.customer()
        await rows.subscription(pause_collection_behavior="void")
        default = await evaluate(db, customer, policy=AccessPolicy(), now=rows.now)
        allowed = await evaluate(
            db, customer, policy=AccessPolicy(access_during_paused_collection=True), now=rows.now
        )
        assert default.has_access is False
        assert allowed.has_access is True

    async def test_tombstoned_subscription_never_grants(
        self, db: AsyncSession, rows: MirrorRows
    ) -> None:
        customer = await rows.customer()
        await rows.subscription(status="active", deleted=True)
        answer = await evaluate(db, customer, policy=AccessPolicy(), now=rows.now)
        assert answer.has_access is False

    @pytest.mark.sqlite
    async def test_features_are_sorted_unique_live_lookup_keys(
        self, db: AsyncSession, rows: MirrorRows
    ) -> None:
        customer = await rows.customer()
        await rows.entitlement("sso")
        await rows.entitlement("export")
        await rows.entitlement("export", id="ent_dup")
        await rows.entitlement("gone", deleted=True)
        await rows.entitlement(None, id="ent_nokey")
        answer = await evaluate(db, customer, policy=AccessPolicy(), now=rows.now)
        assert answer.features == ["export", "sso"]
        # Features are Stripe's own answer: they do not make has_access true by themselves.
        assert answer.has_access is False


async def get(client: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    return await client.get(url, headers=headers)


class TestMyEntitlementsRoute:
    @pytest.mark.sqlite
    async def test_answers_the_contract_shape(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.subscription(cancel_at=rows.now + timedelta(days=3))
        await rows.entitlement("export")
        response = await get(client, "/me/entitlements", **user_headers("user_a"))
        assert response.status_code == 200
        data = response.json()
        assert set(data) == {"customer_id", "has_access", "products", "features", "evaluated_at"}
        assert data["customer_id"] == "cus_a"
        assert data["has_access"] is True
        assert data["features"] == ["export"]
        assert data["products"] == [
            {
                "product_id": "prod_basic",
                "price_id": "price_basic",
                "subscription_id": "sub_a",
                "status": "active",
                "quantity": 1,
                "access_until": data["products"][0]["access_until"],
            }
        ]
        assert datetime.fromisoformat(data["products"][0]["access_until"]) == rows.now + timedelta(
            days=3
        )
        assert datetime.fromisoformat(data["evaluated_at"]).tzinfo is not None

    @pytest.mark.sqlite
    async def test_user_without_customer_gets_the_empty_answer(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await get(client, "/me/entitlements", **user_headers("nobody"))
        assert response.status_code == 200
        # Exactly the body README.md ("Deciding access in your app") shows: no evaluated_at.
        assert response.json() == {
            "customer_id": None,
            "has_access": False,
            "products": [],
            "features": [],
        }
        assert response.headers["ETag"]

    @pytest.mark.sqlite
    async def test_matching_if_none_match_answers_304_without_body(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.subscription()
        first = await get(client, "/me/entitlements", **user_headers("user_a"))
        etag = first.headers["ETag"]
        second = await get(
            client, "/me/entitlements", **user_headers("user_a"), **{"If-None-Match": etag}
        )
        assert second.status_code == 304
        assert second.content == b""
        assert second.headers["ETag"] == etag
        assert second.headers["Cache-Control"] == "private, no-cache"
        assert second.headers["Vary"] == "Authorization"

    async def test_weak_and_listed_tags_also_match(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        etag = (await get(client, "/me/entitlements", **user_headers("user_a"))).headers["ETag"]
        for header in (f"W/{etag}", f'"stale", {etag}', "*"):
            response = await get(
                client, "/me/entitlements", **user_headers("user_a"), **{"If-None-Match": header}
            )
            assert response.status_code == 304, header

    async def test_headers_of_a_full_answer(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        response = await get(
            client, "/me/entitlements", **user_headers("user_a"), **{"If-None-Match": '"stale"'}
        )
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "private, no-cache"
        assert response.headers["Vary"] == "Authorization"
        assert response.headers["ETag"] == entitlements_etag(Entitlements(**response.json()))

    async def test_etag_changes_when_a_webhook_changes_the_answer(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        subscription = await rows.subscription()
        before = await get(client, "/me/entitlements", **user_headers("user_a"))
        await rows.update(subscription, status="canceled")
        after = await get(
            client,
            "/me/entitlements",
            **user_headers("user_a"),
            **{"If-None-Match": before.headers["ETag"]},
        )
        assert after.status_code == 200
        assert after.json()["has_access"] is False
        assert after.headers["ETag"] != before.headers["ETag"]

    async def test_etag_changes_when_access_until_passes_without_any_event(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        subscription = await rows.subscription(cancel_at=rows.now + timedelta(days=1))
        before = await get(client, "/me/entitlements", **user_headers("user_a"))
        # Moving the end into the past is what the clock passing it looks like to the policy.
        await rows.update(subscription, cancel_at=rows.now - timedelta(seconds=1))
        after = await get(
            client,
            "/me/entitlements",
            **user_headers("user_a"),
            **{"If-None-Match": before.headers["ETag"]},
        )
        assert before.json()["has_access"] is True
        assert after.status_code == 200
        assert after.json()["has_access"] is False

    async def test_policy_settings_apply(self, client_factory: Any, rows: MirrorRows) -> None:
        await rows.customer()
        await rows.subscription(
            status="past_due", current_period_start=rows.now - timedelta(days=1)
        )
        async with client_factory(access_past_due_grace_days=3) as generous:
            granted = await get(generous, "/me/entitlements", **user_headers("user_a"))
        async with client_factory() as strict:
            denied = await get(strict, "/me/entitlements", **user_headers("user_a"))
        assert granted.json()["has_access"] is True
        assert denied.json()["has_access"] is False

    async def test_needs_an_end_user_token(self, client: httpx.AsyncClient) -> None:
        anonymous = await get(client, "/me/entitlements")
        with_api_key = await get(client, "/me/entitlements", **backend_headers())
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == "unauthenticated"
        assert with_api_key.status_code == 403
        assert with_api_key.json()["code"] == "forbidden"


class TestCustomerEntitlementsRoute:
    @pytest.mark.sqlite
    async def test_answers_for_any_customer_of_the_mode(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer("cus_nouser", app_user_id=None)
        await rows.subscription(customer_id="cus_nouser")
        response = await get(client, "/customers/cus_nouser/entitlements", **backend_headers())
        assert response.status_code == 200
        assert response.json()["customer_id"] == "cus_nouser"
        assert response.json()["has_access"] is True
        assert response.headers["Cache-Control"] == "private, no-cache"

    @pytest.mark.sqlite
    async def test_unknown_customer_is_404(self, client: httpx.AsyncClient) -> None:
        response = await get(client, "/customers/cus_missing/entitlements", **backend_headers())
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "customer_not_found"

    async def test_conditional_request_answers_304(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        first = await get(client, "/customers/cus_a/entitlements", **backend_headers())
        second = await get(
            client,
            "/customers/cus_a/entitlements",
            **backend_headers(),
            **{"If-None-Match": first.headers["ETag"]},
        )
        assert second.status_code == 304
        assert second.content == b""

    async def test_needs_an_api_key(self, client: httpx.AsyncClient, rows: MirrorRows) -> None:
        await rows.customer()
        anonymous = await get(client, "/customers/cus_a/entitlements")
        wrong_key = await get(client, "/customers/cus_a/entitlements", **{"X-API-Key": "nope"})
        end_user = await get(client, "/customers/cus_a/entitlements", **user_headers("user_a"))
        assert anonymous.status_code == 401
        assert wrong_key.status_code == 401
        assert end_user.status_code == 403
        assert end_user.json()["code"] == "forbidden"


class TestUserEntitlementsRoute:
    @pytest.mark.sqlite
    async def test_answers_for_the_linked_customer(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.subscription()
        await rows.entitlement("export")
        response = await get(client, "/users/user_a/entitlements", **backend_headers())
        assert response.status_code == 200
        assert response.json()["customer_id"] == "cus_a"
        assert response.json()["features"] == ["export"]

    async def test_user_without_customer_gets_the_empty_answer(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await get(client, "/users/nobody/entitlements", **backend_headers())
        assert response.status_code == 200
        assert response.json() == {
            "customer_id": None,
            "has_access": False,
            "products": [],
            "features": [],
        }

    async def test_same_answer_same_etag_as_the_user_sees(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.subscription()
        backend = await get(client, "/users/user_a/entitlements", **backend_headers())
        user = await get(client, "/me/entitlements", **user_headers("user_a"))
        assert backend.headers["ETag"] == user.headers["ETag"]

    async def test_admin_keys_pass_and_tokens_do_not(self, client: httpx.AsyncClient) -> None:
        admin = await get(client, "/users/nobody/entitlements", **admin_headers())
        end_user = await get(client, "/users/nobody/entitlements", **user_headers("nobody"))
        assert admin.status_code == 200
        assert end_user.status_code == 403
