"""GET /admin/events and POST /admin/events/{event_id}/replay."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mirror.stripe_payloads import customer, subscription
from portal_service.mirror.tables import Subscription
from support import admin_headers, backend_headers, deliver, make_event, user_headers

T0 = 1_760_000_000


async def seed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    events = [
        make_event("customer.created", customer(f"cus_{n}"), created=T0 + n) for n in range(5)
    ] + [make_event("charge.succeeded", {"id": f"ch_{n}", "object": "charge"}) for n in range(2)]
    for event in events:
        assert (await deliver(client, event)).status_code == 200
    return events


@pytest.mark.sqlite
class TestAdminEventList:
    async def test_lists_newest_first_with_the_event_columns(
        self, client: httpx.AsyncClient
    ) -> None:
        events = await seed(client)
        response = await client.get("/admin/events", headers=admin_headers())
        assert response.status_code == 200
        body = response.json()
        assert [e["id"] for e in body["data"]] == [e["id"] for e in reversed(events)]
        assert body["next_cursor"] is None
        newest = body["data"][0]
        assert set(newest) >= {
            "id",
            "type",
            "api_version",
            "created",
            "livemode",
            "account",
            "status",
            "attempts",
            "last_error",
            "received_at",
            "processed_at",
            "payload",
        }
        assert (newest["type"], newest["status"]) == ("charge.succeeded", "ignored")

    async def test_filters_by_status_and_type(self, client: httpx.AsyncClient) -> None:
        await seed(client)
        ignored = await client.get("/admin/events?status=ignored", headers=admin_headers())
        assert {e["type"] for e in ignored.json()["data"]} == {"charge.succeeded"}
        typed = await client.get(
            "/admin/events",
            params={"type": "customer.created", "status": "processed"},
            headers=admin_headers(),
        )
        assert len(typed.json()["data"]) == 5
        none = await client.get("/admin/events?status=failed", headers=admin_headers())
        assert none.json() == {"data": [], "next_cursor": None}

    async def test_cursor_pages_through_everything_once(self, client: httpx.AsyncClient) -> None:
        events = await seed(client)
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            page = (
                await client.get("/admin/events", params=params, headers=admin_headers())
            ).json()
            seen += [e["id"] for e in page["data"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 4
        assert seen == [e["id"] for e in reversed(events)]

    @pytest.mark.parametrize(
        "query", ["limit=0", "limit=101", "status=done", "cursor=not-a-cursor", "cursor=WzEsMl0"]
    )
    async def test_invalid_queries_are_422(self, client: httpx.AsyncClient, query: str) -> None:
        response = await client.get(f"/admin/events?{query}", headers=admin_headers())
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    @pytest.mark.parametrize(
        ("headers", "status", "code"),
        [
            ({}, 401, "unauthenticated"),
            ({"X-API-Key": "wrong"}, 401, "unauthenticated"),
            (backend_headers(), 403, "forbidden"),
            (user_headers(), 403, "forbidden"),
        ],
    )
    async def test_needs_an_admin_key(
        self, client: httpx.AsyncClient, headers: dict[str, str], status: int, code: str
    ) -> None:
        listed = await client.get("/admin/events", headers=headers)
        replayed = await client.post("/admin/events/evt_1/replay", headers=headers)
        assert (listed.status_code, listed.json()["code"]) == (status, code)
        assert (replayed.status_code, replayed.json()["code"]) == (status, code)


@pytest.mark.sqlite
class TestAdminReplay:
    async def test_unknown_event_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/admin/events/evt_missing/replay", headers=admin_headers())
        assert response.status_code == 404
        assert response.json()["code"] == "event_not_found"

    async def test_replay_applies_through_the_ordering_rules(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        older = make_event(
            "customer.subscription.updated", subscription(status="past_due"), created=T0
        )
        newer = make_event(
            "customer.subscription.updated", subscription(status="active"), created=T0 + 1
        )
        await deliver(client, older)
        await deliver(client, newer)
        response = await client.post(f"/admin/events/{older['id']}/replay", headers=admin_headers())
        assert response.json() == {"id": older["id"], "status": "processed", "result": "stale"}
        assert (await rows.get(Subscription, "sub_1")).status == "active"

    async def test_replay_of_an_ignored_event_reports_it(self, client: httpx.AsyncClient) -> None:
        event = make_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
        await deliver(client, event)
        response = await client.post(f"/admin/events/{event['id']}/replay", headers=admin_headers())
        assert response.json() == {"id": event["id"], "status": "ignored", "result": "ignored"}
