"""SQL injection and CSRF: hostile values in every place the API takes text (path, query,
cursor, body, webhook fields) are data, never SQL; the offline portal page's forms are
refused from another origin (or none) and without the session's CSRF token."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mirror.stripe_payloads import customer
from portal_service.mirror.tables import Customer
from portal_service.portal.demo import DEMO_USER, seed
from support import admin_headers, backend_headers, deliver, make_event, user_headers

PAYLOADS = [
    "' OR '1'='1",
    "x'; DROP TABLE customers; --",
    '" OR 1=1 --',
    "cus_a') UNION SELECT id, raw FROM stripe_events --",
    "%27%20OR%201%3D1",
    "\\'; SELECT pg_sleep(5); --",
]


async def table_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as connection:
        return {
            name: (await connection.execute(text(f"SELECT count(*) FROM {name}"))).scalar_one()
            for name in ("customers", "stripe_events", "portal_sessions")
        }


@pytest.mark.sqlite
class TestInjection:
    @pytest.mark.parametrize("payload", PAYLOADS)
    async def test_hostile_text_is_data_everywhere(
        self, client: httpx.AsyncClient, engine: AsyncEngine, payload: str
    ) -> None:
        # Another user's customer: none of the answers below may show it.
        await deliver(client, make_event("customer.created", customer("cus_victim")))
        linked = await client.put(
            "/users/victim/customer", json={"customer_id": "cus_victim"}, headers=backend_headers()
        )
        assert linked.status_code == 200
        before = await table_counts(engine)
        answers: list[httpx.Response] = [
            await client.get(f"/users/{payload}/entitlements", headers=backend_headers()),
            await client.get(f"/customers/{payload}/entitlements", headers=backend_headers()),
            await client.put(
                f"/users/{payload}/customer",
                json={"customer_id": payload},
                headers=backend_headers(),
            ),
            await client.get("/admin/events", params={"type": payload}, headers=admin_headers()),
            await client.get("/me/invoices", params={"cursor": payload}, headers=user_headers()),
            await client.get("/me", headers=user_headers(payload)),
            await client.post(f"/admin/events/{payload}/replay", headers=admin_headers()),
        ]
        statuses = [a.status_code for a in answers]
        assert all(s < 500 for s in statuses), statuses
        by_user, by_customer, link, events, cursor, me, replay = answers
        assert by_user.json()["customer_id"] is None
        assert by_customer.status_code == 404
        assert link.status_code in (404, 422)
        assert events.json()["data"] == []
        assert cursor.status_code in (404, 422)
        assert me.status_code == 404
        assert replay.status_code in (404, 422)
        assert all("cus_victim" not in a.text for a in answers)
        assert await table_counts(engine) == before

    @pytest.mark.parametrize("payload", PAYLOADS)
    async def test_hostile_webhook_fields_are_stored_verbatim(
        self, client: httpx.AsyncClient, rows: Any, payload: str
    ) -> None:
        event = make_event("customer.updated", customer("cus_quoted", name=payload, email=payload))
        assert (await deliver(client, event)).json()["status"] == "processed"
        row = await rows.get(Customer, "cus_quoted")
        assert (row.name, row.email) == (payload, payload)


ORIGIN = "http://testserver"
HIDDEN = re.compile(r"<input type='hidden' name='(\w+)' value='([^']*)'>")


@pytest.mark.sqlite
class TestOfflinePageCsrf:
    @pytest.mark.parametrize(
        ("origin", "csrf"),
        [
            ("https://evil.test", None),
            ("null", None),
            (None, None),
            (ORIGIN, ""),
            (ORIGIN, "forged"),
        ],
        ids=["other-origin", "opaque-origin", "no-origin", "no-token", "wrong-token"],
    )
    async def test_a_cross_site_or_tokenless_form_changes_nothing(
        self, client: httpx.AsyncClient, origin: str | None, csrf: str | None
    ) -> None:
        app = client.app  # type: ignore[attr-defined]
        assert await seed(app, service_url=ORIGIN) is not None
        created = await client.post("/portal-sessions", headers=user_headers(DEMO_USER))
        path = urlsplit(created.json()["url"]).path
        page = await client.get(path, params={"view": "cancel"})
        forms = re.findall(r"<form method='post'.*?</form>", page.text, flags=re.S)
        # Every form of the page carries the session's token and a one-time nonce.
        assert forms
        assert all({"csrf", "nonce"} <= dict(HIDDEN.findall(form)).keys() for form in forms)
        (cancel,) = [f for f in map(dict, map(HIDDEN.findall, forms)) if f["action"] == "cancel"]
        fields = {**cancel} if csrf is None else {**cancel, "csrf": csrf}
        headers = {"Origin": origin} if origin is not None else {}
        forged = await client.post(path, data=fields, headers=headers)
        assert forged.status_code == 403
        subs = await client.get("/me/subscriptions", headers=user_headers(DEMO_USER))
        assert [s["cancel_at_period_end"] for s in subs.json()["data"]] == [False]
        # The positive control: the same form from this origin, with its token, is taken
        # (the refusal did not even use up its one-time nonce).
        taken = await client.post(path, data=cancel, headers={"Origin": ORIGIN})
        assert taken.status_code == 303
        # Nor can another site frame the page to trick a click.
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
