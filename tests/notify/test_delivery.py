"""The delivery loop and the access_until scheduler, driven step by step against the test
database and a real receiver on 127.0.0.1 (no app lifespan: nothing else delivers)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from mirror.stripe_payloads import customer, item
from mirror.stripe_payloads import subscription as stripe_subscription
from notify.receiver import NOTIFY_SECRET, Receiver
from notify.support import notifications
from portal_service.db import create_sessionmaker, utcnow
from portal_service.mirror.apply import apply_fetched
from portal_service.notify.delivery import Backoff, DeliveryLoop
from portal_service.notify.outbox import OutboxConfig, outbox_sessionmaker, policy_of
from portal_service.notify.scheduler import AccessUntilScheduler
from portal_service.notify.tables import Notification

FAST = Backoff(base=0.05, cap=0.05)


def subscription(sub_id: str = "sub_1", **overrides: Any) -> dict[str, Any]:
    """A subscription with an item of its own (the payloads' default item id is shared)."""
    items = [item(f"si_{sub_id}", subscription_id=sub_id)]
    return stripe_subscription(sub_id, items=items, **overrides)


async def apply(sessionmaker: Any, kind: str, obj: dict[str, Any]) -> None:
    """One fetched object through the mirror's write path, as sync and resync apply them."""
    async with sessionmaker() as session:
        await apply_fetched(session, kind, obj, utcnow())  # type: ignore[arg-type]
        await session.commit()


def loop_for(engine: AsyncEngine, receiver: Receiver, **options: Any) -> DeliveryLoop:
    values: dict[str, Any] = {"timeout": 0.5, "backoff": FAST}
    values.update(options)
    return DeliveryLoop(
        create_sessionmaker(engine), url=receiver.url, secret=NOTIFY_SECRET, **values
    )


async def drain(loop: DeliveryLoop, *, rounds: int = 40) -> None:
    """Deliver until nothing is left that could become due soon."""
    import asyncio

    for _ in range(rounds):
        await loop.deliver_due()
        await asyncio.sleep(0.06)


@pytest.mark.sqlite
class TestDeliveryLoop:
    async def test_a_failing_receiver_is_retried_until_it_succeeds(
        self,
        engine: AsyncEngine,
        receiver: Receiver,
        notify_settings: Callable[..., dict[str, Any]],
        settings_factory: Callable[..., Any],
    ) -> None:
        sessionmaker = outbox_sessionmaker(engine, settings_factory(**notify_settings()))
        await apply(sessionmaker, "customer", customer("cus_1"))
        await apply(sessionmaker, "subscription", subscription(customer="cus_1"))
        receiver.script = ["fail", "hang", "ok"]
        receiver.hang_seconds = 1.5
        loop = loop_for(engine, receiver)
        await drain(loop)
        (row,) = await notifications(engine)
        assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
        assert receiver.attempts == 3
        assert receiver.ids() == [row.id]

    async def test_the_last_error_is_kept_while_retrying(
        self,
        engine: AsyncEngine,
        receiver: Receiver,
        notify_settings: Callable[..., dict[str, Any]],
        settings_factory: Callable[..., Any],
    ) -> None:
        sessionmaker = outbox_sessionmaker(engine, settings_factory(**notify_settings()))
        await apply(sessionmaker, "customer", customer("cus_1"))
        await apply(sessionmaker, "subscription", subscription(customer="cus_1"))
        receiver.script = ["fail"]
        loop = loop_for(engine, receiver, backoff=Backoff(base=60, cap=60))
        await loop.deliver_due()
        (row,) = await notifications(engine)
        assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 500")
        assert timedelta(seconds=29) < row.next_attempt_at - utcnow() <= timedelta(seconds=60)

    async def test_a_customer_is_told_in_order_and_a_parked_one_stops_holding_back(
        self,
        engine: AsyncEngine,
        receiver: Receiver,
        notify_settings: Callable[..., dict[str, Any]],
        settings_factory: Callable[..., Any],
    ) -> None:
        sessionmaker = outbox_sessionmaker(engine, settings_factory(**notify_settings()))
        await apply(sessionmaker, "customer", customer("cus_1"))
        await apply(sessionmaker, "subscription", subscription("sub_1", customer="cus_1"))
        await apply(sessionmaker, "subscription", subscription("sub_2", customer="cus_1"))
        first, _second = await notifications(engine)
        # The first one has run out of time: its next failure parks it.
        async with create_sessionmaker(engine)() as session:
            await session.execute(
                update(Notification)
                .where(Notification.id == first.id)  # type: ignore[arg-type]
                .values(give_up_at=utcnow())
            )
            await session.commit()
        receiver.script = ["fail"]
        loop = loop_for(engine, receiver)
        await loop.deliver_due()
        assert receiver.ids() == []  # the second waited for the first
        await drain(loop, rounds=3)
        parked, delivered = await notifications(engine)
        assert (parked.status, parked.last_error) == ("parked", "HTTP 500")
        assert delivered.status == "delivered"
        (body,) = receiver.bodies()
        assert [p["subscription_id"] for p in body["current"]["products"]] == ["sub_1", "sub_2"]
        assert body["previous"] is None  # nothing was ever delivered before it

    async def test_two_loops_never_deliver_one_notification_twice(
        self,
        engine: AsyncEngine,
        receiver: Receiver,
        notify_settings: Callable[..., dict[str, Any]],
        settings_factory: Callable[..., Any],
        is_postgres: bool,
    ) -> None:
        import asyncio

        sessionmaker = outbox_sessionmaker(engine, settings_factory(**notify_settings()))
        for n in range(12):
            await apply(sessionmaker, "customer", customer(f"cus_{n}"))
            await apply(sessionmaker, "subscription", subscription(f"sub_{n}", customer=f"cus_{n}"))
        loops = [loop_for(engine, receiver, batch=3) for _ in range(3)]
        for _ in range(6):
            await asyncio.gather(*(loop.deliver_due() for loop in loops))
        ids = receiver.ids()
        assert len(ids) == len(set(ids)) == 12
        assert {row.status for row in await notifications(engine)} == {"delivered"}


@pytest.mark.sqlite
class TestAccessUntilScheduler:
    async def test_an_access_until_passing_notifies_once_with_no_event(
        self,
        engine: AsyncEngine,
        notify_settings: Callable[..., dict[str, Any]],
        settings_factory: Callable[..., Any],
    ) -> None:
        settings = settings_factory(**notify_settings())
        sessionmaker = outbox_sessionmaker(engine, settings)
        config = OutboxConfig(policy=policy_of(settings), coalesce=timedelta(0))
        schedulers = [AccessUntilScheduler(create_sessionmaker(engine), config) for _ in range(2)]
        start = utcnow()
        assert await schedulers[0].tick(start) is None  # starts the clock
        ends = int((start + timedelta(minutes=10)).timestamp())
        await apply(sessionmaker, "customer", customer("cus_1"))
        await apply(sessionmaker, "subscription", subscription(customer="cus_1", cancel_at=ends))
        await apply(sessionmaker, "customer", customer("cus_2"))
        await apply(sessionmaker, "subscription", subscription("sub_2", customer="cus_2"))
        assert await schedulers[1].tick(start + timedelta(minutes=5)) == 0
        assert await schedulers[0].tick(start + timedelta(minutes=11)) == 1
        assert await schedulers[1].tick(start + timedelta(minutes=12)) == 0
        rows = await notifications(engine, customer_id="cus_1")
        assert [(r.seq, r.current["has_access"]) for r in rows] == [(1, True), (2, False)]
        assert rows[1].since == rows[0].current
        # cus_2's subscription has no end: its one notification is the grant.
        (ongoing,) = await notifications(engine, customer_id="cus_2")
        assert ongoing.current["has_access"] is True

    async def test_a_passage_is_compared_with_the_answer_before_it_without_history(
        self,
        engine: AsyncEngine,
        settings_factory: Callable[..., Any],
    ) -> None:
        # Notifications just turned on: the mirror has a customer but no notification yet.
        settings = settings_factory()
        plain = create_sessionmaker(engine)
        start = utcnow()
        ends = int((start + timedelta(minutes=10)).timestamp())
        await apply(plain, "customer", customer("cus_1"))
        await apply(plain, "subscription", subscription(customer="cus_1", cancel_at=ends))
        config = OutboxConfig(policy=policy_of(settings), coalesce=timedelta(0))
        scheduler = AccessUntilScheduler(plain, config)
        await scheduler.tick(start)
        assert await scheduler.tick(start + timedelta(minutes=11)) == 1
        (row,) = await notifications(engine)
        assert (row.since["has_access"], row.current["has_access"]) == (True, False)

    async def test_the_app_is_told_when_access_ends_in_real_time(
        self,
        engine: AsyncEngine,
        receiver: Receiver,
        notify_settings: Callable[..., dict[str, Any]],
        settings_factory: Callable[..., Any],
    ) -> None:
        import asyncio

        settings = settings_factory(**notify_settings())
        sessionmaker = outbox_sessionmaker(engine, settings)
        config = OutboxConfig(policy=policy_of(settings), coalesce=timedelta(0))
        scheduler = AccessUntilScheduler(create_sessionmaker(engine), config)
        await scheduler.tick()
        ends = int(utcnow().timestamp()) + 2
        await apply(sessionmaker, "customer", customer("cus_1"))
        await apply(sessionmaker, "subscription", subscription(customer="cus_1", cancel_at=ends))
        loop = loop_for(engine, receiver)
        await loop.deliver_due()
        await asyncio.sleep(max(0.0, ends - utcnow().timestamp()) + 0.1)
        assert await scheduler.tick() == 1
        await loop.deliver_due()
        granted, ended = receiver.bodies()
        assert granted["current"]["products"][0]["access_until"] is not None
        assert (ended["current"]["has_access"], ended["previous"]) == (False, granted["current"])


def readme_receiver() -> str:
    """The receiver example of the README's notifications section."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Being told when access changes", 1)[1].split("###", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return str(code)


class TestReadmeReceiver:
    async def test_the_readme_receiver_accepts_a_real_delivery(
        self,
        engine: AsyncEngine,
        notify_settings: Callable[..., dict[str, Any]],
        settings_factory: Callable[..., Any],
    ) -> None:
        import httpx

        code = readme_receiver()
        told: list[tuple[Any, ...]] = []
        namespace: dict[str, Any] = {"grant_or_revoke": lambda *args: told.append(args)}
        exec(code.replace('"whsec_..."', repr(NOTIFY_SECRET)), namespace)  # noqa: S102  # our own README
        sessionmaker = outbox_sessionmaker(engine, settings_factory(**notify_settings()))
        await apply(sessionmaker, "customer", customer("cus_1"))
        await apply(sessionmaker, "subscription", subscription(customer="cus_1"))
        loop = DeliveryLoop(
            create_sessionmaker(engine),
            url="http://receiver.test/hooks/portal",
            secret=NOTIFY_SECRET,
            timeout=2,
            transport=httpx.ASGITransport(app=namespace["app"]),
        )
        await loop.deliver_due()
        (row,) = await notifications(engine)
        assert row.status == "delivered"
        assert told == [(None, True, row.current)]


@pytest.mark.sqlite
class TestPastDueGrace:
    async def test_a_grace_running_out_notifies_with_no_event(
        self,
        engine: AsyncEngine,
        notify_settings: Callable[..., dict[str, Any]],
        settings_factory: Callable[..., Any],
    ) -> None:
        settings = settings_factory(**notify_settings(), access_past_due_grace_days=3)
        sessionmaker = outbox_sessionmaker(engine, settings)
        config = OutboxConfig(policy=policy_of(settings), coalesce=timedelta(0))
        scheduler = AccessUntilScheduler(create_sessionmaker(engine), config)
        start = utcnow()
        await scheduler.tick(start)
        # past_due since a period that began 3 days less 5 minutes ago: 5 minutes of grace left.
        began = int((start - timedelta(days=3) + timedelta(minutes=5)).timestamp())
        items = [item("si_late", subscription_id="sub_late", period_start=began)]
        late = stripe_subscription(
            "sub_late", customer="cus_1", status="past_due", items=items, period_start=began
        )
        await apply(sessionmaker, "customer", customer("cus_1"))
        await apply(sessionmaker, "subscription", late)
        assert await scheduler.tick(start + timedelta(minutes=4)) == 0
        assert await scheduler.tick(start + timedelta(minutes=6)) == 1
        rows = await notifications(engine)
        assert [r.current["has_access"] for r in rows] == [True, False]

    async def test_the_grace_runs_from_the_oldest_unpaid_invoice(
        self,
        engine: AsyncEngine,
        notify_settings: Callable[..., dict[str, Any]],
        settings_factory: Callable[..., Any],
    ) -> None:
        from mirror.stripe_payloads import invoice

        settings = settings_factory(**notify_settings(), access_past_due_grace_days=3)
        sessionmaker = outbox_sessionmaker(engine, settings)
        config = OutboxConfig(policy=policy_of(settings), coalesce=timedelta(0))
        scheduler = AccessUntilScheduler(create_sessionmaker(engine), config)
        start = utcnow()
        await scheduler.tick(start)
        # The period began long ago; the unpaid invoice 3 days less 5 minutes ago.
        billed = int((start - timedelta(days=3) + timedelta(minutes=5)).timestamp())
        await apply(sessionmaker, "customer", customer("cus_1"))
        await apply(sessionmaker, "invoice", invoice("in_1", subscription="sub_1", created=billed))
        await apply(sessionmaker, "subscription", subscription(customer="cus_1", status="past_due"))
        assert await scheduler.tick(start + timedelta(minutes=6)) == 1
        rows = await notifications(engine)
        assert [r.current["has_access"] for r in rows] == [True, False]
