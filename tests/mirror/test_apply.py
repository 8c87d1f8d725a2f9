"""apply_fetched / apply_missing (what sync and the portal use) and the lock keys."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mirror.stripe_payloads import customer, subscription, utc
from portal_service.db import create_sessionmaker
from portal_service.mirror.apply import apply_fetched, apply_missing
from portal_service.mirror.locks import lock_key
from portal_service.mirror.ordering import Outcome, floor_second
from portal_service.mirror.tables import Customer, Subscription
from support import deliver, make_event

T0 = 1_760_000_000


async def fetched(
    engine: AsyncEngine, kind: str, obj: dict[str, Any], at: int, **kw: Any
) -> Outcome:
    async with create_sessionmaker(engine)() as session:
        outcome = await apply_fetched(
            session, kind, obj, utc(at).replace(microsecond=654_321), **kw
        )  # type: ignore[arg-type]
        await session.commit()
    return outcome


@pytest.mark.sqlite
class TestApplyFetched:
    async def test_stamps_the_fetch_time_floored_to_the_second(
        self, engine: AsyncEngine, rows: Any
    ) -> None:
        assert await fetched(engine, "subscription", subscription(), T0) is Outcome.APPLIED
        row = await rows.get(Subscription, "sub_1")
        assert (row.source_ts, row.source_event_id, row.status) == (utc(T0), None, "active")

    async def test_older_event_cannot_roll_a_fetch_back(
        self, engine: AsyncEngine, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await fetched(engine, "subscription", subscription(status="past_due"), T0)
        older = make_event(
            "customer.subscription.updated", subscription(status="active"), created=T0 - 1
        )
        assert (await deliver(client, older)).json()["status"] == "stale"
        assert (await rows.get(Subscription, "sub_1")).status == "past_due"

    async def test_newer_event_wins_over_a_fetch(
        self, engine: AsyncEngine, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await fetched(engine, "subscription", subscription(status="past_due"), T0)
        newer = make_event(
            "customer.subscription.updated", subscription(status="active"), created=T0 + 1
        )
        await deliver(client, newer)
        assert (await rows.get(Subscription, "sub_1")).status == "active"

    async def test_fetch_older_than_the_row_is_stale(self, engine: AsyncEngine, rows: Any) -> None:
        await fetched(engine, "subscription", subscription(status="past_due"), T0)
        assert (
            await fetched(engine, "subscription", subscription(status="active"), T0 - 5)
            is Outcome.STALE
        )
        assert (await rows.get(Subscription, "sub_1")).status == "past_due"

    async def test_stores_the_account_and_mode_of_the_object(
        self, engine: AsyncEngine, rows: Any
    ) -> None:
        await fetched(engine, "customer", customer(livemode=True), T0, account="acct_1")
        row = await rows.get(Customer, "cus_1")
        assert (row.account, row.livemode) == ("acct_1", True)

    async def test_deleted_customer_from_stripe_tombstones(
        self, engine: AsyncEngine, rows: Any
    ) -> None:
        await fetched(engine, "customer", customer(), T0)
        stub = {"id": "cus_1", "object": "customer", "deleted": True}
        assert await fetched(engine, "customer", stub, T0 + 1) is Outcome.APPLIED
        row = await rows.get(Customer, "cus_1")
        assert (row.deleted, row.email, row.source_ts) == (True, "ada@example.com", utc(T0 + 1))

    async def test_missing_object_is_tombstoned(self, engine: AsyncEngine, rows: Any) -> None:
        await fetched(engine, "subscription", subscription(), T0)
        async with create_sessionmaker(engine)() as session:
            await apply_missing(session, "subscription", "sub_1", utc(T0 + 1))
            await session.commit()
        row = await rows.get(Subscription, "sub_1")
        assert (row.deleted, row.status) == (True, "active")

    def test_floor_second_drops_the_fraction(self) -> None:
        assert floor_second(utc(T0).replace(microsecond=999_999)) == utc(T0)


class TestLockKey:
    def test_is_a_stable_signed_64_bit_integer(self) -> None:
        key = lock_key("", "subscription", "sub_1")
        assert key == lock_key("", "subscription", "sub_1")
        assert -(2**63) <= key < 2**63

    @pytest.mark.parametrize(
        "other",
        [
            ("acct_1", "subscription", "sub_1"),
            ("", "invoice", "sub_1"),
            ("", "subscription", "sub_2"),
        ],
    )
    def test_differs_per_account_kind_and_id(self, other: tuple[str, str, str]) -> None:
        assert lock_key(*other) != lock_key("", "subscription", "sub_1")

    def test_parts_cannot_run_into_each_other(self) -> None:
        assert lock_key("a", "bc", "d") != lock_key("ab", "c", "d")
