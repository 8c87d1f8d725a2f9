"""access.changed end to end in one process: webhooks through the real app, delivered to a
real receiver on 127.0.0.1 that verifies each signature with the standardwebhooks library."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mirror.stripe_payloads import customer, entitlement_summary, subscription
from notify.receiver import Receiver
from notify.support import T0, customer_created, notifications, subscribed
from portal_service.db import utcnow
from portal_service.mirror.apply import apply_fetched
from portal_service.notify.outbox import outbox_sessionmaker
from support import admin_headers, deliver, make_event


def no_access(cus_id: str) -> dict[str, Any]:
    return {"customer_id": cus_id, "has_access": False, "products": [], "features": []}


@pytest.mark.sqlite
class TestAccessChanged:
    async def test_a_revoking_webhook_notifies_once_after_the_earlier_notification(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        receiver: Receiver,
        engine: AsyncEngine,
    ) -> None:
        async with client_factory(**notify_settings()) as client:
            assert (await deliver(client, customer_created("cus_1"))).status_code == 200
            await deliver(client, subscribed("cus_1", "sub_1", created=T0 + 1))
            (granted,) = await receiver.wait_for(1)
            revoke = subscribed("cus_1", "sub_1", created=T0 + 2, status="canceled")
            assert (await deliver(client, revoke)).json()["status"] == "processed"
            first, revoked = await receiver.wait_for(2)
        assert first == granted
        assert granted["type"] == "access.changed"
        assert granted["current"]["has_access"] is True
        assert granted["current"]["products"][0]["subscription_id"] == "sub_1"
        assert "evaluated_at" not in granted["current"]
        assert granted["previous"] is None
        assert (revoked["current"], revoked["previous"]) == (no_access("cus_1"), granted["current"])
        assert (revoked["customer_id"], revoked["livemode"]) == ("cus_1", False)
        rows = await notifications(engine)
        assert [(r.seq, r.status) for r in rows] == [(1, "delivered"), (2, "delivered")]
        assert receiver.ids() == [r.id for r in rows]

    async def test_an_event_that_changes_nothing_in_the_answer_notifies_nothing(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        receiver: Receiver,
        engine: AsyncEngine,
    ) -> None:
        async with client_factory(**notify_settings()) as client:
            await deliver(client, customer_created("cus_1"))
            await deliver(client, subscribed("cus_1", "sub_1", created=T0 + 1))
            await receiver.wait_for(1)
            unchanged = [
                make_event(
                    "customer.updated", customer("cus_1", email="new@example.com"), created=T0 + 2
                ),
                subscribed("cus_1", "sub_1", created=T0 + 3, metadata={"note": "renamed"}),
                # A change of another customer's answer that this one does not share.
                make_event("customer.created", customer("cus_2"), created=T0 + 4),
            ]
            for event in unchanged:
                assert (await deliver(client, event)).json()["status"] == "processed"
        assert len(await notifications(engine)) == 1
        assert len(receiver.ids()) == 1

    async def test_a_rolled_back_apply_notifies_nothing(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        engine: AsyncEngine,
        refuse_subscription_status: Callable[[str], Any],
        settings_factory: Callable[..., Any],
    ) -> None:
        async with client_factory(**notify_settings(notify_coalesce_seconds=60)) as client:
            await deliver(client, customer_created("cus_1"))
            async with refuse_subscription_status("active"):
                failed = await deliver(client, subscribed("cus_1", "sub_1", created=T0 + 1))
            assert failed.status_code == 500
            assert await notifications(engine) == []
        # A transaction that applies and then rolls back (a caller giving up) writes none.
        sessionmaker = outbox_sessionmaker(engine, settings_factory(**notify_settings()))
        async with sessionmaker() as session:
            await apply_fetched(session, "subscription", subscription(customer="cus_1"), utcnow())
            await session.rollback()
        assert await notifications(engine) == []
        # The same apply committed does write one: the check above can fail.
        async with sessionmaker() as session:
            await apply_fetched(session, "subscription", subscription(customer="cus_1"), utcnow())
            await session.commit()
        (row,) = await notifications(engine)
        assert row.current["has_access"] is True

    async def test_a_replayed_event_notifies_like_a_delivery(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        receiver: Receiver,
        refuse_subscription_status: Callable[[str], Any],
    ) -> None:
        async with client_factory(**notify_settings()) as client:
            await deliver(client, customer_created("cus_1"))
            event = subscribed("cus_1", "sub_1", created=T0 + 1)
            async with refuse_subscription_status("active"):
                assert (await deliver(client, event)).status_code == 500
            replayed = await client.post(
                f"/admin/events/{event['id']}/replay", headers=admin_headers()
            )
            assert replayed.json()["result"] == "processed"
            (body,) = await receiver.wait_for(1)
        assert body["current"]["has_access"] is True

    async def test_features_and_the_app_user_are_in_the_body(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        receiver: Receiver,
    ) -> None:
        async with client_factory(**notify_settings()) as client:
            await deliver(client, customer_created("cus_1"))
            linked = await client.put(
                "/users/user_42/customer", json={"customer_id": "cus_1"}, headers=admin_headers()
            )
            assert linked.status_code == 200, linked.text
            summary = entitlement_summary("cus_1", "api_access")
            await deliver(
                client,
                make_event(
                    "entitlements.active_entitlement_summary.updated", summary, created=T0 + 1
                ),
            )
            (body,) = await receiver.wait_for(1)
        assert body["app_user_id"] == "user_42"
        assert (body["current"]["features"], body["current"]["has_access"]) == (
            ["api_access"],
            False,
        )
        changed_at = body["changed_at"]
        assert changed_at.endswith("Z")


@pytest.mark.sqlite
class TestCoalescing:
    async def test_changes_inside_the_window_become_one_notification(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        engine: AsyncEngine,
    ) -> None:
        async with client_factory(**notify_settings(notify_coalesce_seconds=60)) as client:
            await deliver(client, customer_created("cus_1"))
            await deliver(client, subscribed("cus_1", "sub_1", created=T0 + 1))
            await deliver(client, subscribed("cus_1", "sub_2", created=T0 + 2))
        (row,) = await notifications(engine)
        assert row.status == "pending"
        assert row.since == no_access("cus_1")
        assert [p["subscription_id"] for p in row.current["products"]] == ["sub_1", "sub_2"]

    async def test_a_change_undone_inside_the_window_leaves_nothing(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        engine: AsyncEngine,
    ) -> None:
        async with client_factory(**notify_settings(notify_coalesce_seconds=60)) as client:
            await deliver(client, customer_created("cus_1"))
            await deliver(client, subscribed("cus_1", "sub_1", created=T0 + 1))
            assert len(await notifications(engine)) == 1
            await deliver(client, subscribed("cus_1", "sub_1", created=T0 + 2, status="canceled"))
        assert await notifications(engine) == []

    async def test_a_change_after_the_window_is_a_new_notification(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        receiver: Receiver,
        engine: AsyncEngine,
    ) -> None:
        async with client_factory(**notify_settings(notify_coalesce_seconds=0.2)) as client:
            await deliver(client, customer_created("cus_1"))
            await deliver(client, subscribed("cus_1", "sub_1", created=T0 + 1))
            await receiver.wait_for(1)
            await deliver(client, subscribed("cus_1", "sub_2", created=T0 + 2))
            await receiver.wait_for(2)
        assert [r.seq for r in await notifications(engine)] == [1, 2]


async def settled(client: Any, *, within: float = 20.0) -> None:
    """Returns once no notification is pending any more, as the admin route lists them."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pending = await client.get(
            "/admin/notifications", params={"status": "pending"}, headers=admin_headers()
        )
        if pending.json()["data"] == []:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("notifications still pending")


@pytest.mark.sqlite
class TestAdminRoutes:
    async def test_list_by_status_with_cursor_and_replay(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        receiver: Receiver,
    ) -> None:
        async with client_factory(**notify_settings()) as client:
            for n in range(3):
                await deliver(client, customer_created(f"cus_{n}"))
                await deliver(client, subscribed(f"cus_{n}", f"sub_{n}", created=T0 + 1))
            await receiver.wait_for(3)
            # The receiver answers before the loop commits `delivered`: wait for that commit.
            await settled(client)
            first = await client.get(
                "/admin/notifications", params={"limit": 2}, headers=admin_headers()
            )
            assert first.status_code == 200
            page = first.json()
            assert len(page["data"]) == 2
            assert page["next_cursor"]
            rest = await client.get(
                "/admin/notifications",
                params={"limit": 2, "cursor": page["next_cursor"]},
                headers=admin_headers(),
            )
            listed = page["data"] + rest.json()["data"]
            assert rest.json()["next_cursor"] is None
            assert sorted(n["customer_id"] for n in listed) == ["cus_0", "cus_1", "cus_2"]
            assert {n["status"] for n in listed} == {"delivered"}
            pending = await client.get(
                "/admin/notifications", params={"status": "pending"}, headers=admin_headers()
            )
            assert pending.json() == {"data": [], "next_cursor": None}
            replayed = await client.post(
                f"/admin/notifications/{listed[0]['id']}/replay", headers=admin_headers()
            )
            assert replayed.status_code == 200
            assert (replayed.json()["status"], replayed.json()["attempts"]) == ("pending", 0)
            await receiver.wait_for(4)
            missing = await client.post(
                "/admin/notifications/ntf_nope/replay", headers=admin_headers()
            )
            bad = await client.get(
                "/admin/notifications", params={"status": "lost"}, headers=admin_headers()
            )
            anonymous = await client.get("/admin/notifications")
        assert receiver.ids()[3] == listed[0]["id"]
        assert (missing.status_code, missing.json()["code"]) == (404, "notification_not_found")
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid_request")
        assert anonymous.status_code == 401

    async def test_metrics_count_deliveries_and_the_oldest_undelivered(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        receiver: Receiver,
    ) -> None:
        async with client_factory(**notify_settings(notify_coalesce_seconds=60)) as client:
            await deliver(client, customer_created("cus_1"))
            await deliver(client, subscribed("cus_1", "sub_1", created=T0 + 1))
            text = (await client.get("/metrics")).text
        assert 'portal_notifications_total{result="delivered"}' in text
        assert 'portal_notifications_total{result="failed"}' in text
        (gauge,) = [
            line
            for line in text.splitlines()
            if line.startswith("portal_notifications_oldest_undelivered_seconds ")
        ]
        assert float(gauge.split()[1]) > 0
        assert receiver.ids() == []


@pytest.mark.sqlite
class TestOtherWriters:
    async def test_a_resync_that_grants_access_notifies(
        self,
        stripe_client: Callable[..., Any],
        stripe_mock: Any,
        notify_settings: Callable[..., dict[str, Any]],
        engine: AsyncEngine,
    ) -> None:
        from mirror.stripe_lists import StripeLists

        lists = StripeLists(stripe_mock, date=T0 + 10)
        lists.lists["/v1/customers"] = [customer()]
        lists.lists["/v1/subscriptions"] = [subscription()]
        lists.lists["/v1/invoices"] = []
        lists.lists["/v1/customers/cus_1/payment_methods"] = []
        lists.lists["/v1/customers/cus_1/tax_ids"] = []
        lists.lists["/v1/entitlements/active_entitlements"] = [
            {**e, "customer": "cus_1"}
            for e in entitlement_summary("cus_1", "pro")["entitlements"]["data"]
        ]
        # respx holds every httpx request in this test: the row is checked, not a delivery.
        async with stripe_client(**notify_settings(notify_coalesce_seconds=60)) as client:
            resynced = await client.post("/admin/customers/cus_1/resync", headers=admin_headers())
            assert resynced.status_code == 200, resynced.text
        (row,) = await notifications(engine)
        assert (row.current["has_access"], row.current["features"]) == (True, ["pro"])


@pytest.mark.sqlite
class TestShutdown:
    async def test_shutdown_lets_the_delivery_in_flight_finish(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        receiver: Receiver,
        engine: AsyncEngine,
    ) -> None:
        import asyncio

        receiver.script = ["hang"]
        receiver.hang_seconds = 1.0
        async with client_factory(**notify_settings()) as client:
            await deliver(client, customer_created("cus_1"))
            await deliver(client, subscribed("cus_1", "sub_1", created=T0 + 1))
            for _ in range(100):  # until the receiver holds the request
                if receiver.attempts:
                    break
                await asyncio.sleep(0.02)
        # The lifespan ended while the request was in flight: it was answered and recorded.
        (row,) = await notifications(engine)
        assert (row.status, row.attempts) == ("delivered", 1)


class TestConcurrentChanges:
    async def test_the_last_notification_is_the_final_answer_under_concurrent_writes(
        self,
        client_factory: Callable[..., Any],
        notify_settings: Callable[..., dict[str, Any]],
        engine: AsyncEngine,
    ) -> None:
        import asyncio

        async with client_factory(**notify_settings()) as client:
            await deliver(client, customer_created("cus_1"))
            # Eight subscriptions of one customer, each its own object lock, all at once.
            grants = [subscribed("cus_1", f"sub_{n}", created=T0 + 1) for n in range(8)]
            answers = await asyncio.gather(*(deliver(client, event) for event in grants))
            assert {a.json()["status"] for a in answers} == {"processed"}
            final = (
                await client.get("/customers/cus_1/entitlements", headers=admin_headers())
            ).json()
        final.pop("evaluated_at")
        rows = await notifications(engine)
        assert len(final["products"]) == 8
        assert rows[-1].current == final
        # Each row moves on from the one before it: no change was lost in between.
        assert [r.since for r in rows[1:]] == [r.current for r in rows[:-1]]
