"""Offline mode end to end: the stateful portal simulator. Sessions are created through
POST /portal-sessions, the page's forms are posted as a browser posts them, and what the
mirror makes of the stand-in's signed events is read back through /me/*."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal_service.db import utcnow
from portal_service.gateway.offline_tables import OfflineOutbox, OfflineSession
from portal_service.mirror.tables import Customer, StripeEvent
from portal_service.portal.demo import (
    CANCEL_NOW_CONFIGURATION,
    DEMO_PRICES,
    DEMO_USER,
    DemoCustomer,
    seed,
)
from support import admin_headers, backend_headers, deliver, make_event, user_headers

SERVED_AT = "http://billing.internal.test:9000"
ORIGIN = "http://testserver"
_HIDDEN = re.compile(r"<input type='hidden' name='(\w+)' value='([^']*)'>")


def app_of(client: httpx.AsyncClient) -> FastAPI:
    app: FastAPI = client.app  # type: ignore[attr-defined]
    return app


@pytest.fixture
async def demo(client: httpx.AsyncClient) -> DemoCustomer:
    created = await seed(app_of(client), service_url=ORIGIN)
    assert created is not None
    return created


async def open_session(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> str:
    response = await client.post(
        "/portal-sessions", headers=user_headers(DEMO_USER), json=body or {}
    )
    assert response.status_code == 201, response.text
    url: str = response.json()["url"]
    assert url.startswith(ORIGIN + "/offline/portal/")
    return urlsplit(url).path


def form_fields(html: str, action: str) -> dict[str, str]:
    """The hidden fields of the page's first form for `action`."""
    for form in re.findall(r"<form method='post'.*?</form>", html, flags=re.S):
        fields = dict(_HIDDEN.findall(form))
        if fields.get("action") == action:
            return fields
    raise AssertionError(f"no {action} form on the page")


async def submit(
    client: httpx.AsyncClient,
    path: str,
    action: str,
    *,
    view: str = "home",
    origin: str | None = ORIGIN,
    **values: str,
) -> httpx.Response:
    page = await client.get(path, params={"view": view})
    assert page.status_code == 200, page.text
    fields = {**form_fields(page.text, action), **values}
    headers = {"Origin": origin} if origin is not None else {}
    return await client.post(path, data=fields, headers=headers)


async def subscription(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/me/subscriptions", headers=user_headers(DEMO_USER))
    assert response.status_code == 200
    (sub,) = response.json()["data"]
    result: dict[str, Any] = sub
    return result


@pytest.mark.sqlite
class TestDemoData:
    async def test_the_demo_reaches_the_mirror_through_webhooks(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        sub = await subscription(client)
        assert sub["id"] == demo.subscription_id
        assert sub["status"] == "active"
        assert sub["items"][0]["quantity"] == 1
        assert sub["items"][0]["price_id"] == DEMO_PRICES[0]
        assert sub["portal"] == {"can_update": True, "can_cancel": True, "reasons": []}
        invoices = (await client.get("/me/invoices", headers=user_headers(DEMO_USER))).json()
        assert [i["status"] for i in invoices["data"]] == ["paid", "paid"]
        methods = (await client.get("/me/payment-methods", headers=user_headers(DEMO_USER))).json()
        assert [(m["card"]["last4"], m["is_default"]) for m in methods["data"]] == [("4242", True)]
        entitlements = (
            await client.get("/me/entitlements", headers=user_headers(DEMO_USER))
        ).json()
        assert entitlements["has_access"] is True
        assert sorted(entitlements["features"]) == ["exports", "reports"]
        events = (await db.execute(select(StripeEvent.type, StripeEvent.status))).all()
        assert ("customer.subscription.created", "processed") in events
        assert all(status in ("processed", "ignored") for _, status in events)
        outbox = (await db.execute(select(OfflineOutbox))).scalars().all()
        assert outbox
        assert all(row.delivered_at is not None for row in outbox)

    async def test_seeding_twice_keeps_the_first_demo_unless_reset(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        assert await seed(app_of(client), service_url=ORIGIN) is None
        fresh = await seed(app_of(client), service_url=ORIGIN, reset=True)
        assert fresh is not None
        assert fresh.customer_id != demo.customer_id
        old = await db.get(Customer, demo.customer_id)
        assert old is not None
        assert old.deleted
        assert old.app_user_id is None
        assert (await subscription(client))["id"] == fresh.subscription_id


@pytest.mark.sqlite
class TestPortalActions:
    async def test_cancel_at_period_end_then_reactivate(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        path = await open_session(client)
        done = await submit(
            client, path, "cancel", view="cancel", sub=demo.subscription_id, reason="unused"
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"{path}?done=1"
        sub = await subscription(client)
        assert sub["cancel_at_period_end"] is True
        assert sub["status"] == "active"
        types = (await db.execute(select(StripeEvent.type))).scalars().all()
        await db.rollback()
        assert "customer.subscription.updated" in types

        again = await submit(client, path, "reactivate")
        assert again.status_code == 303
        assert (await subscription(client))["cancel_at_period_end"] is False

    async def test_cancel_now_where_the_configuration_cancels_immediately(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        created = await client.post(
            "/portal-sessions",
            headers=backend_headers(),
            json={"app_user_id": DEMO_USER, "configuration": CANCEL_NOW_CONFIGURATION},
        )
        assert created.status_code == 201, created.text
        path = urlsplit(created.json()["url"]).path
        page = await client.get(path, params={"view": "cancel"})
        assert "Cancel now" in page.text
        done = await submit(client, path, "cancel", view="cancel")
        assert done.status_code == 303
        sub = await subscription(client)
        assert sub["status"] == "canceled"
        assert sub["portal"]["can_cancel"] is False
        entitlements = (
            await client.get("/me/entitlements", headers=user_headers(DEMO_USER))
        ).json()
        assert entitlements["has_access"] is False
        assert entitlements["features"] == []

    async def test_change_quantity_and_switch_price(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        path = await open_session(client)
        done = await submit(client, path, "update", view="update", quantity="3")
        assert done.status_code == 303
        entitlements = (
            await client.get("/me/entitlements", headers=user_headers(DEMO_USER))
        ).json()
        assert entitlements["products"][0]["quantity"] == 3
        switched = await submit(
            client, path, "update", view="update", quantity="3", price=DEMO_PRICES[1]
        )
        assert switched.status_code == 303
        sub = await subscription(client)
        assert sub["items"][0]["price_id"] == DEMO_PRICES[1]
        assert sub["items"][0]["quantity"] == 3

    async def test_pause_and_resume_collection(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        path = await open_session(client)
        assert (await submit(client, path, "pause", view="pause")).status_code == 303
        sub = await subscription(client)
        assert sub["pause_collection"]["behavior"] == "void"
        assert (await submit(client, path, "resume")).status_code == 303
        assert (await subscription(client))["pause_collection"] is None

    async def test_cards_added_made_default_and_removed(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        path = await open_session(client)
        added = await submit(
            client,
            path,
            "add_card",
            view="card",
            number="5555 5555 5555 4444",
            exp_month="4",
            exp_year=str(utcnow().year + 2),
            make_default="on",
        )
        assert added.status_code == 303
        methods = (await client.get("/me/payment-methods", headers=user_headers(DEMO_USER))).json()
        by_last4 = {m["card"]["last4"]: m for m in methods["data"]}
        assert by_last4["4444"]["is_default"] is True
        assert by_last4["4242"]["is_default"] is False
        page = await client.get(path)
        old_card = by_last4["4242"]["id"]
        fields = {
            **form_fields(page.text, "remove_card"),
            "payment_method": old_card,
        }
        removed = await client.post(path, data=fields, headers={"Origin": ORIGIN})
        assert removed.status_code == 303
        methods = (await client.get("/me/payment-methods", headers=user_headers(DEMO_USER))).json()
        assert [m["card"]["last4"] for m in methods["data"]] == ["4444"]

    async def test_the_default_card_of_a_paying_customer_stays(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        path = await open_session(client)
        home = await client.get(path)
        assert "Remove" not in home.text
        methods = (await client.get("/me/payment-methods", headers=user_headers(DEMO_USER))).json()
        # A hand-made form: the page offers none for the default card of a paying customer.
        page = await client.get(path, params={"view": "card"})
        fields = {
            **form_fields(page.text, "add_card"),
            "action": "remove_card",
            "payment_method": methods["data"][0]["id"],
        }
        refused = await client.post(path, data=fields, headers={"Origin": ORIGIN})
        assert refused.status_code == 409
        assert "add or choose another first" in refused.text
        methods = (await client.get("/me/payment-methods", headers=user_headers(DEMO_USER))).json()
        assert len(methods["data"]) == 1

    async def test_details_and_tax_ids_updated(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        path = await open_session(client)
        saved = await submit(
            client,
            path,
            "update_customer",
            view="customer",
            email="ada@example.com",
            address_line1="1 Rue de Rivoli",
            address_city="Paris",
            address_postal_code="75001",
            address_country="fr",
        )
        assert saved.status_code == 303
        me = (await client.get("/me", headers=user_headers(DEMO_USER))).json()
        assert me["email"] == "ada@example.com"
        row = await db.get(Customer, demo.customer_id, populate_existing=True)
        address = row.address if row is not None else None
        await db.rollback()
        assert address is not None
        assert address["country"] == "FR"
        added = await submit(
            client,
            path,
            "add_tax_id",
            view="customer",
            tax_type="eu_vat",
            tax_value="FR12345678901",
        )
        assert added.status_code == 303
        page = await client.get(path, params={"view": "customer"})
        assert "FR12345678901" in page.text
        removed = await submit(client, path, "remove_tax_id", view="customer")
        assert removed.status_code == 303
        page = await client.get(path, params={"view": "customer"})
        assert "FR12345678901" not in page.text
        types = (await db.execute(select(StripeEvent.type))).scalars().all()
        assert {"customer.tax_id.created", "customer.tax_id.deleted"} <= set(types)


@pytest.mark.sqlite
class TestFlows:
    async def test_a_cancel_flow_opens_on_cancel_and_redirects_after_completion(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        path = await open_session(
            client,
            {
                "return_url": "https://app.example.com/account",
                "flow": {
                    "type": "subscription_cancel",
                    "subscription_id": demo.subscription_id,
                    "after_completion": {
                        "type": "redirect",
                        "return_url": "https://app.example.com/bye",
                    },
                },
            },
        )
        page = await client.get(path)
        assert "Cancel at the end of the period" in page.text
        fields = form_fields(page.text, "cancel")
        done = await client.post(path, data=fields, headers={"Origin": ORIGIN})
        assert done.status_code == 303
        assert done.headers["location"] == "https://app.example.com/bye"
        assert (await subscription(client))["cancel_at_period_end"] is True
        # Completed: the link now opens the portal's homepage.
        home = await client.get(path)
        assert "Renew subscription" in home.text

    async def test_an_update_confirm_flow_presets_the_change_and_confirms_in_place(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        sub = await subscription(client)
        path = await open_session(
            client,
            {
                "flow": {
                    "type": "subscription_update_confirm",
                    "subscription_id": demo.subscription_id,
                    "items": [
                        {"id": sub["items"][0]["id"], "price": DEMO_PRICES[1], "quantity": 2}
                    ],
                    "after_completion": {
                        "type": "hosted_confirmation",
                        "custom_message": "Merci & welcome!",
                    },
                }
            },
        )
        page = await client.get(path)
        assert "value='2'" in page.text
        assert f"value='{DEMO_PRICES[1]}' checked" in page.text
        # What the browser submits: the hidden fields and the preset inputs.
        fields = {**form_fields(page.text, "update"), "quantity": "2", "price": DEMO_PRICES[1]}
        done = await client.post(path, data=fields, headers={"Origin": ORIGIN})
        assert done.headers["location"] == f"{path}?view=confirmation"
        confirmation = await client.get(done.headers["location"])
        assert "Merci &amp; welcome!" in confirmation.text
        changed = await subscription(client)
        assert (changed["items"][0]["price_id"], changed["items"][0]["quantity"]) == (
            DEMO_PRICES[1],
            2,
        )

    async def test_the_page_speaks_the_session_locale_and_shows_the_business(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        for locale, lang, words in (
            ("fr", "fr", "Résilier l'abonnement"),
            ("de", "de", "Abonnement kündigen"),
            ("en", "en", "Cancel subscription"),
        ):
            path = await open_session(client, {"locale": locale})
            page = await client.get(path)
            assert f"<html lang='{lang}'>" in page.text
            assert words.replace("'", "&#x27;") in page.text
            assert "Demo SaaS" in page.text
            assert "https://example.com/terms" in page.text
            # Every visible input has a label.
            for ident in re.findall(r"<input id='(\w+)'", page.text):
                assert f"<label for='{ident}'" in page.text


@pytest.mark.sqlite
class TestBadInput:
    async def test_a_quantity_of_minus_one_changes_nothing(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        path = await open_session(client)
        before = await _event_count(db)
        refused = await submit(client, path, "update", view="update", quantity="-1")
        assert refused.status_code == 422
        assert "between 1 and 99" in refused.text
        assert (await subscription(client))["items"][0]["quantity"] == 1
        assert await _event_count(db) == before

    async def test_the_error_page_speaks_the_session_locale(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        path = await open_session(client, {"locale": "fr"})
        refused = await submit(client, path, "update", view="update", quantity="-1")
        assert refused.status_code == 422
        assert "<html lang='fr'>" in refused.text
        assert "Rien n&#x27;a été modifié : la quantité doit être comprise entre 1 et 99." in (
            refused.text
        )
        not_a_number = await submit(client, path, "update", view="update", quantity="two")
        assert not_a_number.status_code == 422
        assert "nombre entier" in not_a_number.text

    async def test_a_price_not_offered_changes_nothing(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        path = await open_session(client)
        before = await _event_count(db)
        refused = await submit(client, path, "update", view="update", price="price_elsewhere")
        assert refused.status_code == 422
        assert "not offered" in refused.text
        assert (await subscription(client))["items"][0]["price_id"] == DEMO_PRICES[0]
        assert await _event_count(db) == before

    async def test_a_replayed_form_changes_nothing_again(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        path = await open_session(client)
        page = await client.get(path, params={"view": "update"})
        fields = {**form_fields(page.text, "update"), "quantity": "2"}
        first = await client.post(path, data=fields, headers={"Origin": ORIGIN})
        assert first.status_code == 303
        replayed = await client.post(
            path, data={**fields, "quantity": "5"}, headers={"Origin": ORIGIN}
        )
        assert replayed.status_code == 409
        assert "already submitted" in replayed.text
        assert (await subscription(client))["items"][0]["quantity"] == 2

    @pytest.mark.parametrize(
        "origin", ["https://evil.example", "null", None], ids=["other", "opaque", "missing"]
    )
    async def test_a_form_from_another_origin_is_refused(
        self, client: httpx.AsyncClient, demo: DemoCustomer, origin: str | None
    ) -> None:
        path = await open_session(client)
        refused = await submit(client, path, "cancel", view="cancel", origin=origin)
        assert refused.status_code == 403
        assert "did not come from this portal page" in refused.text
        assert (await subscription(client))["cancel_at_period_end"] is False

    async def test_a_form_with_another_sessions_csrf_token_is_refused(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        path = await open_session(client)
        other = await open_session(client)
        page = await client.get(other, params={"view": "cancel"})
        stolen = form_fields(page.text, "cancel")["csrf"]
        refused = await submit(client, path, "cancel", view="cancel", csrf=stolen)
        assert refused.status_code == 403
        assert (await subscription(client))["cancel_at_period_end"] is False

    @pytest.mark.parametrize("token", ["nonsense", "a.b", "x" * 5000])
    async def test_a_forged_link_is_a_clear_page(
        self, client: httpx.AsyncClient, token: str
    ) -> None:
        response = await client.get(f"/offline/portal/{token}")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "This portal link is not valid" in response.text
        posted = await client.post(
            f"/offline/portal/{token}", data={"action": "cancel"}, headers={"Origin": ORIGIN}
        )
        assert posted.status_code == 404

    @pytest.mark.parametrize(
        ("created_ago", "active_ago"),
        [
            (timedelta(minutes=6), None),
            (timedelta(minutes=90), timedelta(minutes=61)),
            (timedelta(minutes=121), timedelta(minutes=1)),
        ],
        ids=["unused-5-minutes", "idle-1-hour", "older-than-2-hours"],
    )
    async def test_an_expired_link_is_a_clear_page_and_changes_nothing(
        self,
        client: httpx.AsyncClient,
        demo: DemoCustomer,
        db: AsyncSession,
        created_ago: timedelta,
        active_ago: timedelta | None,
    ) -> None:
        path = await open_session(client)
        page = await client.get(path, params={"view": "cancel"})
        fields = form_fields(page.text, "cancel")
        now = utcnow()
        await db.execute(
            update(OfflineSession).values(
                created=now - created_ago,
                last_activity=(now - active_ago) if active_ago else None,
            )
        )
        await db.commit()
        expired = await client.get(path)
        assert expired.status_code == 410
        assert "This portal link has expired" in expired.text
        posted = await client.post(path, data=fields, headers={"Origin": ORIGIN})
        assert posted.status_code == 410
        assert (await subscription(client))["cancel_at_period_end"] is False

    async def test_a_recently_used_link_lives_past_five_minutes(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        path = await open_session(client)
        now = utcnow()
        await db.execute(
            update(OfflineSession).values(
                created=now - timedelta(minutes=30), last_activity=now - timedelta(minutes=20)
            )
        )
        await db.commit()
        assert (await client.get(path)).status_code == 200

    async def test_mirrored_text_is_escaped(
        self, client: httpx.AsyncClient, demo: DemoCustomer
    ) -> None:
        path = await open_session(client)
        saved = await submit(
            client, path, "update_customer", view="customer", name="<script>alert(1)</script>"
        )
        assert saved.status_code == 303
        page = await client.get(path)
        assert "<script>alert(1)" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def _event_count(db: AsyncSession) -> int:
    count = len((await db.execute(select(StripeEvent.id))).all())
    # On SQLite the test's session holds the write lock from its first statement.
    await db.rollback()
    return count


@asynccontextmanager
async def served_at(
    app: FastAPI, base_url: str, *, root_path: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    """A second client on the same running app, reaching it at another address."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as other:
        yield other


@pytest.mark.sqlite
class TestOfflineSessions:
    async def test_a_first_visit_creates_a_customer_in_the_stand_in(
        self, client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        created = await client.post(
            "/portal-sessions", headers=user_headers("user_1", email="ada@example.com")
        )
        assert created.status_code == 201
        body = created.json()
        assert body["customer_id"].startswith("cus_offline_")
        assert body["livemode"] is False
        (customer,) = (await db.execute(select(Customer))).scalars().all()
        linked = customer.app_user_id
        await db.rollback()
        assert linked == "user_1"
        page = await client.get(body["url"])
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "same-origin"
        assert "ada@example.com" in page.text
        assert "No subscriptions." in page.text

    async def test_a_customer_only_the_mirror_holds_is_taken_over_by_the_stand_in(
        self, client: httpx.AsyncClient
    ) -> None:
        # Its events were signed and posted by hand: the stand-in never created it.
        customer = {
            "id": "cus_by_hand",
            "object": "customer",
            "email": "grace@example.com",
            "livemode": False,
            "metadata": {},
        }
        delivered = await deliver(client, make_event("customer.created", customer))
        assert delivered.status_code == 200, delivered.text

        created = await client.post(
            "/portal-sessions", headers=backend_headers(), json={"customer_id": "cus_by_hand"}
        )

        assert created.status_code == 201, created.text
        assert created.json()["customer_id"] == "cus_by_hand"
        page = await client.get(created.json()["url"])
        assert page.status_code == 200
        assert "grace@example.com" in page.text

    async def test_the_link_points_at_the_host_and_port_that_served_the_request(
        self, client: httpx.AsyncClient
    ) -> None:
        async with served_at(app_of(client), SERVED_AT) as elsewhere:
            created = await elsewhere.post("/portal-sessions", headers=user_headers("user_1"))
            assert created.status_code == 201
            url = created.json()["url"]
            assert url.startswith(SERVED_AT + "/offline/portal/")
            page = await elsewhere.get(url)
        assert page.status_code == 200

    async def test_the_link_keeps_the_root_path_the_service_is_mounted_under(
        self, client: httpx.AsyncClient
    ) -> None:
        async with served_at(app_of(client), SERVED_AT, root_path="/billing-api") as proxied:
            created = await proxied.post("/portal-sessions", headers=user_headers("user_1"))
        assert created.status_code == 201
        assert created.json()["url"].startswith(SERVED_AT + "/billing-api/offline/portal/")

    async def test_a_replay_points_at_the_host_that_served_the_replay(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = {**user_headers("user_1"), "Idempotency-Key": "k1"}
        first = await client.post("/portal-sessions", headers=headers)
        async with served_at(app_of(client), SERVED_AT) as elsewhere:
            replay = await elsewhere.post("/portal-sessions", headers=headers)
            page = await elsewhere.get(replay.json()["url"])
        assert replay.status_code == 201
        assert replay.json()["id"] == first.json()["id"]
        assert urlsplit(replay.json()["url"]).path == urlsplit(first.json()["url"]).path
        assert page.status_code == 200

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

    async def test_state_and_links_survive_a_restart(
        self, client: httpx.AsyncClient, demo: DemoCustomer, client_factory: Callable[..., Any]
    ) -> None:
        path = await open_session(client)
        async with client_factory() as restarted:
            page = await restarted.get(path, params={"view": "update"})
            assert page.status_code == 200
            fields = {**form_fields(page.text, "update"), "quantity": "4"}
            done = await restarted.post(path, data=fields, headers={"Origin": ORIGIN})
            assert done.status_code == 303
            assert (await subscription(restarted))["items"][0]["quantity"] == 4


@pytest.mark.sqlite
class TestRefetchesAnswerFromTheStandIn:
    async def test_resync_reads_the_stand_ins_objects(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        response = await client.post(
            f"/admin/customers/{demo.customer_id}/resync", headers=admin_headers()
        )
        assert response.status_code == 200, response.text
        counts = response.json()
        assert (counts["subscriptions"], counts["payment_methods"], counts["invoices"]) == (1, 1, 2)

    async def test_a_flow_for_a_subscription_the_mirror_lacks_is_fetched(
        self, client: httpx.AsyncClient, demo: DemoCustomer, db: AsyncSession
    ) -> None:
        from portal_service.mirror.tables import Subscription, SubscriptionItem

        await db.execute(
            SubscriptionItem.__table__.delete()  # type: ignore[attr-defined]
        )
        await db.execute(Subscription.__table__.delete())  # type: ignore[attr-defined]
        await db.commit()
        created = await client.post(
            "/portal-sessions",
            headers=user_headers(DEMO_USER),
            json={"flow": {"type": "subscription_cancel", "subscription_id": demo.subscription_id}},
        )
        assert created.status_code == 201, created.text
        assert await db.get(Subscription, demo.subscription_id) is not None
