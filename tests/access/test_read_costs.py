"""What keeps the reads for apps cheap, asserted on what reaches the database (never on time):
one statement per entitlements answer, never the `raw` column, no thread-pool hop per request,
and the single-statement entitlements read agreeing with the facts the portal flows read."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from portal_service.access.facts import (
    customer_access,
    customer_subscriptions,
    subscription_facts,
)
from portal_service.access.routes import router as access_router
from portal_service.ops.routes import router as ops_router
from support import backend_headers, user_headers

if TYPE_CHECKING:
    from conftest import MirrorRows


@contextmanager
def statements_on(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement sent on `engine` (and the engines derived from it) in the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def queries(statements: list[str]) -> list[str]:
    # SQLite's BEGIN goes through the cursor too; transaction control is not a query.
    return [s for s in statements if not s.lstrip().upper().startswith("BEGIN")]


async def full_mirror(rows: MirrorRows) -> None:
    await rows.customer(default_payment_method="pm_a")
    await rows.subscription(
        items=[{"product_id": "prod_a"}, {"product_id": "prod_b", "price_id": "price_b"}]
    )
    await rows.subscription("sub_old", status="canceled")
    await rows.invoice("in_a", subscription_id="sub_a")
    await rows.payment_method()
    await rows.tax_id()
    await rows.entitlement("export")
    await rows.entitlement("sso")


@pytest.mark.sqlite
class TestEntitlementsReadOnce:
    @pytest.mark.parametrize(
        ("path", "backend"),
        [
            ("/me/entitlements", False),
            ("/users/user_a/entitlements", True),
            ("/customers/cus_a/entitlements", True),
        ],
    )
    async def test_an_answer_is_one_statement(
        self, client: httpx.AsyncClient, rows: MirrorRows, path: str, backend: bool
    ) -> None:
        await full_mirror(rows)
        headers = backend_headers() if backend else user_headers("user_a")
        with statements_on(client.app.state.engine) as seen:  # type: ignore[attr-defined]
            response = await client.get(path, headers=headers)
        assert response.status_code == 200
        assert response.json()["features"] == ["export", "sso"]
        assert len(response.json()["products"]) == 2
        assert len(queries(seen)) == 1, seen

    async def test_a_user_without_customer_is_one_statement_too(
        self, client: httpx.AsyncClient
    ) -> None:
        with statements_on(client.app.state.engine) as seen:  # type: ignore[attr-defined]
            response = await client.get("/me/entitlements", headers=user_headers("nobody"))
        assert response.json()["customer_id"] is None
        assert len(queries(seen)) == 1, seen


@pytest.mark.sqlite
class TestReadsSkipRaw:
    @pytest.mark.parametrize(
        "path",
        [
            "/me",
            "/me/subscriptions",
            "/me/entitlements",
            "/me/invoices",
            "/me/payment-methods",
            "/users/user_a/entitlements",
            "/customers/cus_a/entitlements",
        ],
    )
    async def test_raw_stripe_objects_are_never_loaded(
        self, client: httpx.AsyncClient, rows: MirrorRows, path: str
    ) -> None:
        # `raw` holds the whole Stripe object; no read for apps shows any of it.
        await full_mirror(rows)
        headers = user_headers("user_a") if path.startswith("/me") else backend_headers()
        with statements_on(client.app.state.engine) as seen:  # type: ignore[attr-defined]
            response = await client.get(path, headers=headers)
        assert response.status_code == 200
        assert seen
        assert [s for s in seen if re.search(r"\.raw\b", s)] == []


def _sync_dependencies(dependant: Dependant) -> Iterator[str]:
    for dependency in dependant.dependencies:
        call = dependency.call
        target = call if inspect.isfunction(call) else getattr(call, "__call__", None)  # noqa: B004
        if not (inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)):
            yield getattr(call, "__qualname__", repr(call))
        yield from _sync_dependencies(dependency)


class TestNoThreadPoolHops:
    @pytest.mark.parametrize(
        "route",
        [r for r in (*access_router.routes, *ops_router.routes) if isinstance(r, APIRoute)],
        ids=lambda r: f"{sorted(r.methods)[0]} {r.path}",
    )
    def test_every_dependency_and_endpoint_runs_on_the_event_loop(self, route: APIRoute) -> None:
        # FastAPI runs a plain `def` dependency or endpoint in its thread pool: a thread
        # hop on every request, for work that never blocks.
        assert inspect.iscoroutinefunction(route.endpoint)
        assert list(_sync_dependencies(route.dependant)) == []


class TestCustomerAccess:
    async def test_agrees_with_the_facts_the_portal_flows_read(
        self, db: AsyncSession, rows: MirrorRows
    ) -> None:
        customer = await rows.customer()
        await rows.subscription(
            "sub_1", items=[{"product_id": "prod_a"}, {"product_id": "prod_b", "quantity": 3}]
        )
        await rows.subscription(
            "sub_2",
            status="past_due",
            cancel_at_period_end=True,
            pause_collection_behavior="void",
            schedule_id="sub_sched_1",
            items=[{"usage_type": "metered", "quantity": None, "tax_behavior": None}],
        )
        await rows.subscription("sub_3", status="active", deleted=True)
        await rows.subscription("sub_4", items=[])
        await rows.subscription("sub_5", items=[{}, {"deleted": True}])
        for n, (status, age, deleted) in enumerate(
            [
                ("open", 5, False),
                ("uncollectible", 9, False),
                ("paid", 20, False),
                ("open", 30, True),
            ]
        ):
            await rows.invoice(
                f"in_{n}",
                subscription_id="sub_2",
                status=status,
                stripe_created=rows.now - timedelta(days=age),
                deleted=deleted,
            )
        await rows.subscription("sub_other_mode", livemode=True)
        await rows.subscription("sub_connect", account="acct_1")

        access = await customer_access(db, customer_id=customer.id, livemode=False)
        by_portal = await subscription_facts(
            db, await customer_subscriptions(db, customer.id, livemode=False)
        )
        assert access is not None
        assert {sub.id: sub for sub in access.subscriptions} == by_portal
        assert by_portal["sub_2"].oldest_unpaid_invoice_created == rows.now - timedelta(days=9)
        assert by_portal["sub_3"].status == "canceled"

    @pytest.mark.sqlite
    async def test_finds_a_customer_by_user_or_id_with_its_features(
        self, db: AsyncSession, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.entitlement("sso")
        await rows.entitlement("export")
        await rows.entitlement("export", id="ent_dup")
        await rows.entitlement("gone", deleted=True)
        await rows.entitlement("other_mode", id="ent_live", livemode=True)
        by_user = await customer_access(db, app_user_id="user_a", livemode=False)
        by_id = await customer_access(db, customer_id="cus_a", livemode=False)
        assert by_user == by_id
        assert by_user is not None
        assert (by_user.customer_id, by_user.subscriptions) == ("cus_a", ())
        assert by_user.features == ("export", "sso")

    @pytest.mark.sqlite
    @pytest.mark.parametrize(
        ("fields", "livemode"),
        [
            ({"deleted": True}, False),
            ({}, True),
            ({"account": "acct_1"}, False),
        ],
        ids=["tombstone", "other-mode", "connected-account"],
    )
    async def test_sees_only_live_platform_customers_of_the_mode(
        self, db: AsyncSession, rows: MirrorRows, fields: dict[str, Any], livemode: bool
    ) -> None:
        await rows.customer(**fields)
        await rows.entitlement("export")
        assert await customer_access(db, app_user_id="user_a", livemode=livemode) is None
        assert await customer_access(db, customer_id="cus_a", livemode=livemode) is None

    @pytest.mark.sqlite
    @pytest.mark.parametrize(
        "keys", [{}, {"app_user_id": "user_a", "customer_id": "cus_a"}], ids=["none", "both"]
    )
    async def test_needs_exactly_one_key(self, db: AsyncSession, keys: dict[str, str]) -> None:
        with pytest.raises(ValueError, match="exactly one"):
            await customer_access(db, livemode=False, **keys)
