"""The ordering rule as a property (hypothesis, fixed seed): any delivery order, with any
duplicates, of a generated history of events about a set of objects, delivered
concurrently on PostgreSQL, ends at each object's newest state (deletion being terminal),
with every event recorded once and applied at most once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from faults.services import apply_log, double_applies
from mirror.stripe_payloads import customer, item, subscription, utc
from portal_service.mirror.tables import Customer, StripeEvent, Subscription, SubscriptionItem
from support import deliver, make_event

T0 = 1_760_000_000
LIVE = ("active", "past_due", "trialing", "unpaid", "incomplete")
_runs = itertools.count()


@dataclass(frozen=True)
class Step:
    gap: int  # seconds after the previous event about the same object (>= 1: no ties)
    status: int  # an index into LIVE


# Per subscription: its versions, and whether the newest one deletes it (Stripe never
# makes a canceled subscription live again, so nothing follows a deletion).
histories = st.lists(
    st.tuples(
        st.lists(
            st.builds(Step, st.integers(1, 5), st.integers(0, len(LIVE) - 1)),
            min_size=1,
            max_size=5,
        ),
        st.booleans(),
    ),
    min_size=1,
    max_size=3,
)
History = list[tuple[list[Step], bool]]


def build(run: int, history: History) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Events about one customer and its subscriptions, and each object's expected end."""
    events: list[dict[str, Any]] = []
    expected: dict[str, dict[str, Any]] = {}
    cus_id = f"cus_p{run}"
    for n, (versions, deletion) in enumerate(history):
        sub_id = f"sub_p{run}_{n}"
        created = T0
        for v, step in enumerate(versions):
            created += step.gap
            deleted = deletion and v == len(versions) - 1
            status = "canceled" if deleted else LIVE[step.status]
            item_id = f"si_p{run}_{n}_{v}"
            obj = subscription(
                sub_id,
                customer=cus_id,
                status=status,
                items=[item(item_id, subscription_id=sub_id, quantity=v + 1)],
                metadata={"v": str(v)},
            )
            kind = "customer.subscription.deleted" if deleted else "customer.subscription.updated"
            events.append(make_event(kind, obj, created=created))
            if v == len(versions) - 1:
                expected[sub_id] = {"v": str(v), "status": status, "ts": created, "item": item_id}
    for k in range(len(history) + 1):
        events.append(
            make_event("customer.updated", customer(cus_id, name=f"Name {k}"), created=T0 + k)
        )
    expected[cus_id] = {"name": f"Name {len(history)}", "ts": T0 + len(history)}
    return events, expected


@pytest.fixture
async def logged(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    async with apply_log(engine) as logging_engine:
        yield logging_engine


class TestOrderingProperty:
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(history=histories, data=st.data())
    async def test_any_order_with_duplicates_ends_at_the_newest_state(
        self,
        client: httpx.AsyncClient,
        rows: Any,
        logged: AsyncEngine,
        history: History,
        data: st.DataObject,
    ) -> None:
        run = next(_runs)
        events, expected = build(run, history)
        duplicates = data.draw(
            st.lists(st.sampled_from(events), max_size=len(events)), label="dups"
        )
        order = data.draw(st.permutations(events + duplicates), label="order")
        responses = await asyncio.gather(*(deliver(client, event) for event in order))
        assert {r.status_code for r in responses} == {200}, [r.text for r in responses][:2]
        ids = {e["id"] for e in events}
        recorded = [e for e in await rows.all(StripeEvent) if e.id in ids]
        assert len(recorded) == len(events)
        assert {e.status for e in recorded} == {"processed"}
        for object_id, want in expected.items():
            if object_id.startswith("cus_"):
                row = await rows.get(Customer, object_id)
                assert (row.name, row.source_ts) == (want["name"], utc(want["ts"]))
                continue
            row = await rows.get(Subscription, object_id)
            assert row.raw["metadata"] == {"v": want["v"]}, (object_id, history)
            assert (row.status, row.source_ts) == (want["status"], utc(want["ts"]))
            assert row.deleted == (want["status"] == "canceled")
            (only,) = await rows.all(SubscriptionItem, subscription_id=object_id)
            assert only.id == want["item"]
        assert await double_applies(logged) == []
