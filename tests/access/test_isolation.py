"""No read leaks another tenant's data: other users, crafted cursors, the other mode,
Connect accounts and deleted customers, on every access route."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlmodel import col

from portal_service.mirror.tables import Invoice, PaymentMethod, Subscription
from portal_service.pagination import Keyset, Position
from support import backend_headers, user_headers

if TYPE_CHECKING:
    from conftest import MirrorRows

ME_ROUTES = ["/me", "/me/subscriptions", "/me/entitlements", "/me/invoices", "/me/payment-methods"]
ME_LISTS = {
    "/me/subscriptions": Keyset[Subscription](
        "subscriptions", col(Subscription.stripe_created), col(Subscription.id)
    ),
    "/me/invoices": Keyset[Invoice]("invoices", col(Invoice.stripe_created), col(Invoice.id)),
    "/me/payment-methods": Keyset[PaymentMethod](
        "payment_methods", col(PaymentMethod.stripe_created), col(PaymentMethod.id)
    ),
}
# Every id the `tenants` fixture gives user_b, plus the names that would reveal them.
B_MARKERS = ("cus_b", "sub_b", "si_sub_b", "in_b", "pm_b", "txi_b", "feature-b", "user_b")


def leaked(response: httpx.Response, markers: tuple[str, ...] = B_MARKERS) -> list[str]:
    return [marker for marker in markers if marker in response.text]


async def read(client: httpx.AsyncClient, route: str, user: str = "user_a") -> httpx.Response:
    return await client.get(route, headers=user_headers(user))


def assert_no_customer(response: httpx.Response, route: str) -> None:
    """What a user without a visible customer gets: 404, or the empty entitlements answer."""
    if route == "/me/entitlements":
        assert response.status_code == 200
        assert response.json()["customer_id"] is None
        assert response.json()["products"] == []
        assert response.json()["features"] == []
    else:
        assert response.status_code == 404
        assert response.json()["code"] == "customer_not_found"


class TestOtherUsers:
    @pytest.mark.sqlite
    @pytest.mark.parametrize("route", ME_ROUTES)
    async def test_user_sees_only_their_own_objects(
        self, client: httpx.AsyncClient, tenants: Callable[..., Any], route: str
    ) -> None:
        await tenants()
        mine = await read(client, route)
        theirs = await read(client, route, "user_b")
        assert mine.status_code == 200
        assert leaked(mine) == []
        # The same route does show user_b's own data to user_b: the check above can fail.
        assert leaked(theirs) != []

    @pytest.mark.parametrize("route", ME_ROUTES)
    async def test_user_without_customer_sees_nothing(
        self, client: httpx.AsyncClient, tenants: Callable[..., Any], route: str
    ) -> None:
        await tenants()
        response = await read(client, route, "user_c")
        assert_no_customer(response, route)
        assert leaked(response, (*B_MARKERS, "cus_a", "sub_a", "in_a", "pm_a")) == []

    @pytest.mark.parametrize("route", list(ME_LISTS))
    async def test_cursor_from_another_users_rows_shows_only_own_rows(
        self, client: httpx.AsyncClient, rows: MirrorRows, tenants: Callable[..., Any], route: str
    ) -> None:
        await tenants()
        # user_b's real cursor, and one crafted to start after a point later than every row.
        for n in range(2):
            await rows.subscription(f"sub_b{n}", customer_id="cus_b")
            await rows.invoice(f"in_b{n}", customer_id="cus_b")
            await rows.payment_method(f"pm_b{n}", customer_id="cus_b")
        theirs = await client.get(route, params={"limit": 1}, headers=user_headers("user_b"))
        crafted = ME_LISTS[route].encode(Position(rows.now + timedelta(days=365), "zzz"))
        for cursor in (theirs.json()["next_cursor"], crafted):
            response = await client.get(
                route, params={"cursor": cursor}, headers=user_headers("user_a")
            )
            assert response.status_code == 200
            assert leaked(response) == []
        assert [entry["id"] for entry in response.json()["data"]] in (["sub_a"], ["in_a"], ["pm_a"])

    async def test_backend_customer_route_answers_for_that_customer_only(
        self, client: httpx.AsyncClient, tenants: Callable[..., Any]
    ) -> None:
        await tenants()
        response = await client.get("/customers/cus_a/entitlements", headers=backend_headers())
        assert response.json()["customer_id"] == "cus_a"
        assert response.json()["features"] == ["feature-a"]
        assert leaked(response) == []

    async def test_backend_user_route_answers_for_that_user_only(
        self, client: httpx.AsyncClient, tenants: Callable[..., Any]
    ) -> None:
        await tenants()
        response = await client.get("/users/user_a/entitlements", headers=backend_headers())
        assert response.json()["customer_id"] == "cus_a"
        assert [p["subscription_id"] for p in response.json()["products"]] == ["sub_a"]
        assert leaked(response) == []


async def scoped_rows(rows: MirrorRows, suffix: str, **scope: Any) -> None:
    """One of each object of cus_a, but in another mode or account (`scope`)."""
    await rows.subscription(f"sub_{suffix}", customer_id="cus_a", **scope)
    await rows.invoice(f"in_{suffix}", customer_id="cus_a", **scope)
    await rows.payment_method(f"pm_{suffix}", customer_id="cus_a", **scope)
    await rows.tax_id(f"txi_{suffix}", customer_id="cus_a", **scope)
    await rows.entitlement(f"feature-{suffix}", customer_id="cus_a", **scope)


def markers(suffix: str) -> tuple[str, ...]:
    return (f"sub_{suffix}", f"in_{suffix}", f"pm_{suffix}", f"txi_{suffix}", f"feature-{suffix}")


# What each route shows of `scoped_rows(rows, suffix)` when that scope is the app's own:
# the positive control that keeps "nothing leaked" from passing on a route that shows nothing.
SHOWN = {
    "/me": "cus_a",
    "/me/subscriptions": "sub_{suffix}",
    "/me/entitlements": "feature-{suffix}",
    "/me/invoices": "in_{suffix}",
    "/me/payment-methods": "pm_{suffix}",
}


def assert_shows(response: httpx.Response, route: str, suffix: str) -> None:
    marker = SHOWN[route].format(suffix=suffix)
    assert marker in response.text, f"{route} does not show {marker}: {response.text[:300]}"


class TestOtherModes:
    @pytest.mark.sqlite
    @pytest.mark.parametrize("route", ME_ROUTES)
    async def test_live_customer_is_invisible_to_a_test_mode_app(
        self, client: httpx.AsyncClient, rows: MirrorRows, route: str
    ) -> None:
        await rows.customer("cus_live", livemode=True)
        await rows.subscription("sub_live", customer_id="cus_live", livemode=True)
        response = await read(client, route)
        assert_no_customer(response, route)
        assert leaked(response, ("cus_live", "sub_live")) == []

    @pytest.mark.parametrize("route", ME_ROUTES)
    async def test_test_customer_is_invisible_to_a_live_mode_app(
        self, client_factory: Any, rows: MirrorRows, route: str
    ) -> None:
        await rows.customer("cus_test", livemode=False)
        async with client_factory(stripe_api_key="sk_live_fake") as live:
            response = await read(live, route)
        assert_no_customer(response, route)
        assert leaked(response, ("cus_test",)) == []

    @pytest.mark.parametrize("route", ME_ROUTES)
    async def test_live_mode_app_reads_live_rows(
        self, client_factory: Any, rows: MirrorRows, route: str
    ) -> None:
        await rows.customer("cus_test", app_user_id=None)
        await rows.customer(livemode=True)
        await scoped_rows(rows, "live", livemode=True)
        async with client_factory(stripe_api_key="rk_live_fake") as live:
            response = await read(live, route)
        assert response.status_code == 200
        assert "cus_test" not in response.text
        assert_shows(response, route, "live")

    @pytest.mark.parametrize("route", ME_ROUTES)
    async def test_other_mode_objects_of_the_same_customer_are_invisible(
        self, client: httpx.AsyncClient, rows: MirrorRows, route: str
    ) -> None:
        await rows.customer()
        await scoped_rows(rows, "own")
        await scoped_rows(rows, "live", livemode=True)
        response = await read(client, route)
        assert response.status_code == 200
        assert leaked(response, markers("live")) == []
        assert_shows(response, route, "own")

    async def test_backend_routes_do_not_cross_modes(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer("cus_live", app_user_id="user_live", livemode=True)
        await rows.customer("cus_own", app_user_id="user_own")
        by_id = await client.get("/customers/cus_live/entitlements", headers=backend_headers())
        by_user = await client.get("/users/user_live/entitlements", headers=backend_headers())
        assert by_id.status_code == 404
        assert by_user.json()["customer_id"] is None
        # The positive control: the same routes find a customer of the app's own scope.
        own = await client.get("/customers/cus_own/entitlements", headers=backend_headers())
        own_user = await client.get("/users/user_own/entitlements", headers=backend_headers())
        assert (own.status_code, own_user.json()["customer_id"]) == (200, "cus_own")


class TestConnectAccounts:
    @pytest.mark.sqlite
    @pytest.mark.parametrize("route", ME_ROUTES)
    async def test_connected_account_customer_is_invisible(
        self, client: httpx.AsyncClient, rows: MirrorRows, route: str
    ) -> None:
        await rows.customer("cus_connect", account="acct_1")
        await rows.subscription("sub_connect", customer_id="cus_connect", account="acct_1")
        response = await read(client, route)
        assert_no_customer(response, route)
        assert leaked(response, ("cus_connect", "sub_connect")) == []

    @pytest.mark.parametrize("route", ME_ROUTES)
    async def test_connected_account_objects_of_the_same_customer_id_are_invisible(
        self, client: httpx.AsyncClient, rows: MirrorRows, route: str
    ) -> None:
        await rows.customer()
        await scoped_rows(rows, "own")
        await scoped_rows(rows, "connect", account="acct_1")
        response = await read(client, route)
        assert response.status_code == 200
        assert leaked(response, markers("connect")) == []
        assert_shows(response, route, "own")

    async def test_backend_routes_ignore_connected_accounts(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer("cus_connect", app_user_id="user_connect", account="acct_1")
        await rows.customer("cus_own", app_user_id="user_own")
        by_id = await client.get("/customers/cus_connect/entitlements", headers=backend_headers())
        by_user = await client.get("/users/user_connect/entitlements", headers=backend_headers())
        assert by_id.status_code == 404
        assert by_user.json()["customer_id"] is None
        # The positive control: the same routes find a customer of the app's own scope.
        own = await client.get("/customers/cus_own/entitlements", headers=backend_headers())
        own_user = await client.get("/users/user_own/entitlements", headers=backend_headers())
        assert (own.status_code, own_user.json()["customer_id"]) == (200, "cus_own")


class TestDeletedCustomers:
    @pytest.mark.sqlite
    @pytest.mark.parametrize("route", ME_ROUTES)
    async def test_tombstoned_customer_is_invisible(
        self, client: httpx.AsyncClient, rows: MirrorRows, route: str
    ) -> None:
        # customer.deleted clears app_user_id; a tombstone still holding it must not show either.
        await rows.customer(deleted=True)
        await rows.subscription()
        response = await read(client, route)
        assert_no_customer(response, route)
        assert leaked(response, ("cus_a", "sub_a")) == []

    async def test_backend_routes_treat_a_tombstone_as_unknown(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer(deleted=True)
        await rows.subscription()
        by_id = await client.get("/customers/cus_a/entitlements", headers=backend_headers())
        by_user = await client.get("/users/user_a/entitlements", headers=backend_headers())
        assert by_id.status_code == 404
        assert by_id.json()["code"] == "customer_not_found"
        assert by_user.json()["customer_id"] is None
        assert by_user.json()["has_access"] is False
