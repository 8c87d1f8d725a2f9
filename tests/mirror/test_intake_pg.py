"""PostgreSQL's intake fast path (mirror/intake_pg.py): that it is taken for new events, that
it stores exactly the rows the general path stores for the same events, and that anything
it cannot finish (a redelivery, a failure) leaves nothing behind and goes to the general
path, which records a failure `failed`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import make_settings, truncate_all
from mirror.stripe_payloads import (
    customer,
    entitlement_summary,
    invoice,
    item,
    payment_method,
    subscription,
)
from portal_service.db import create_sessionmaker
from portal_service.main import build_sessionmaker
from portal_service.mirror.events import received_from
from portal_service.mirror.inbox import event_values, insert_event_statement
from portal_service.mirror.intake import ApplyFailed, EventProcessor
from portal_service.mirror.intake_pg import FastIntake
from portal_service.mirror.tables import StripeEvent
from support import make_event

T0 = 1_760_000_000
# Written with the local clock: they differ between any two runs.
_VOLATILE = {"updated_at", "received_at", "processed_at"}
_TABLES = (
    "stripe_events",
    "customers",
    "subscriptions",
    "subscription_items",
    "invoices",
    "payment_methods",
    "entitlement_summaries",
    "entitlements",
)


class _NoStripe:
    """The gateway of offline mode as far as intake looks: ties are settled locally."""

    offline = True


def _events() -> list[dict[str, Any]]:
    def sub(items: list[str], **overrides: Any) -> dict[str, Any]:
        return subscription(
            "sub_f", items=[item(i, subscription_id="sub_f") for i in items], **overrides
        )

    return [
        make_event("customer.created", customer("cus_f"), created=T0),
        make_event("customer.subscription.created", sub(["si_a", "si_b"]), created=T0),
        # An item left out: deleted on both paths.
        make_event("customer.subscription.updated", sub(["si_b"]), created=T0 + 5),
        # Older: stale.
        make_event("customer.subscription.updated", sub(["si_a"]), created=T0 + 1),
        # Same second, another state: a tie settled locally (no Stripe here).
        make_event(
            "customer.subscription.updated", sub(["si_b"], status="past_due"), created=T0 + 5
        ),
        make_event(
            "customer.subscription.deleted", sub(["si_b"], status="canceled"), created=T0 + 9
        ),
        # A live state after the final one: stale whatever its time.
        make_event("customer.subscription.updated", sub(["si_b"]), created=T0 + 20),
        make_event("invoice.created", invoice("in_f", status="draft"), created=T0),
        make_event("invoice.paid", invoice("in_f", status="paid"), created=T0 + 3),
        make_event("payment_method.attached", payment_method("pm_f"), created=T0),
        make_event("payment_method.detached", payment_method("pm_f"), created=T0 + 2),
        make_event(
            "entitlements.active_entitlement_summary.updated",
            entitlement_summary("cus_f", "a", "b"),
            created=T0,
        ),
        make_event(
            "entitlements.active_entitlement_summary.updated",
            entitlement_summary("cus_f", "b"),
            created=T0 + 1,
        ),
        make_event(
            "customer.deleted",
            {"id": "cus_f", "object": "customer", "deleted": True},
            created=T0 + 30,
        ),
        # Ignored, and a duplicate: the general path's answers on both.
        make_event("charge.succeeded", {"id": "ch_1", "object": "charge"}, created=T0),
    ]


async def _snapshot(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as connection:
        for name in _TABLES:
            result = await connection.execute(text(f"SELECT * FROM {name} ORDER BY id"))
            out[name] = [
                {k: v for k, v in row._mapping.items() if k not in _VOLATILE} for row in result
            ]
    return out


async def _run(
    engine: AsyncEngine, events: list[dict[str, Any]], *, fast_path: bool
) -> tuple[list[str], list[bool]]:
    processor = EventProcessor(
        create_sessionmaker(engine),
        _NoStripe(),  # type: ignore[arg-type]
        livemode=False,
        accept_other_mode_events=False,
        fast_path=fast_path,
    )
    taken: list[bool] = []
    fast = processor._fast
    if fast is not None:
        original = fast.receive

        async def spy(**kwargs: Any) -> Any:
            outcome = await original(**kwargs)
            taken.append(outcome is not None)
            return outcome

        fast.receive = spy  # type: ignore[method-assign]
    answers = []
    for event in [*events, events[1]]:
        answers.append(await processor.receive(received_from(json.loads(json.dumps(event)))))
    return answers, taken


async def test_the_fast_path_stores_the_rows_the_general_path_stores(engine: AsyncEngine) -> None:
    events = _events()
    general, taken_general = await _run(engine, events, fast_path=False)
    expected = await _snapshot(engine)
    await truncate_all(engine)
    fast, taken = await _run(engine, events, fast_path=True)
    assert taken_general == []
    # Every routed new event took the fast path; the redelivery at the end did not.
    assert taken == [True] * (len(events) - 1) + [False]
    assert fast == general
    assert general == [
        "processed",
        "processed",
        "processed",
        "stale",
        "processed",
        "processed",
        "stale",
        "processed",
        "processed",
        "processed",
        "processed",
        "processed",
        "processed",
        "processed",
        "ignored",
        "duplicate",
    ]
    got = await _snapshot(engine)
    assert got == expected
    assert [row["id"] for row in got["subscription_items"]] == ["si_b"]
    assert [row["id"] for row in got["entitlements"]] == ["ent_cus_f_b"]


def _fast(engine: AsyncEngine) -> FastIntake:
    fast = FastIntake.for_sessionmaker(create_sessionmaker(engine))
    assert fast is not None
    return fast


async def _receive_fast(fast: FastIntake, event: dict[str, Any]) -> Any:
    from portal_service.mirror.locks import lock_key
    from portal_service.mirror.ordering import Source, parse_incoming
    from portal_service.mirror.projections import object_id_of

    received = received_from(event)
    obj = received.payload["data"]["object"]
    object_id = object_id_of("subscription", obj)
    return await fast.receive(
        event=event_values(
            received,
            status="processed",
            lock=lock_key(received.account, "subscription", object_id),
        ),
        insert_event=insert_event_statement("postgresql", locking=True),
        kind="subscription",
        object_id=object_id,
        incoming=parse_incoming("subscription", obj, "upsert"),
        source=Source(ts=received.created, event_id=received.id, livemode=False),
    )


async def test_a_failed_fast_apply_leaves_nothing_and_the_event_is_recorded_failed(
    engine: AsyncEngine, refuse_subscription_status: Callable[[str], Any], rows: Any
) -> None:
    unpaid = make_event(
        "customer.subscription.updated", subscription("sub_x", status="unpaid"), created=T0
    )
    async with refuse_subscription_status("unpaid"):
        assert await _receive_fast(_fast(engine), unpaid) is None
        assert await rows.get(StripeEvent, unpaid["id"]) is None  # rolled back whole
        processor = EventProcessor(
            create_sessionmaker(engine),
            _NoStripe(),  # type: ignore[arg-type]
            livemode=False,
            accept_other_mode_events=False,
        )
        with pytest.raises(ApplyFailed):
            await processor.receive(received_from(unpaid))
    recorded: StripeEvent = await rows.event(unpaid["id"])
    assert (recorded.status, recorded.attempts) == ("failed", 1)
    assert "refused by test trigger" in (recorded.last_error or "")
    assert await rows.count(StripeEvent) == 1


async def test_a_recorded_event_is_left_to_the_general_path(engine: AsyncEngine) -> None:
    event = make_event("customer.subscription.updated", subscription("sub_y"), created=T0)
    fast = _fast(engine)
    assert str(await _receive_fast(fast, event)) == "applied"
    assert await _receive_fast(fast, event) is None


def test_no_fast_path_with_the_outbox_installed(database_url: str, engine: AsyncEngine) -> None:
    # Issue 12: with NOTIFY_URL set every applied write goes through the session, whose
    # observer writes the outbox in the same transaction.
    settings = make_settings(database_url, notify_url="https://hooks.example.com/portal")
    assert FastIntake.for_sessionmaker(build_sessionmaker(engine, settings)) is None
    assert FastIntake.for_sessionmaker(build_sessionmaker(engine, make_settings(database_url)))


@pytest.mark.sqlite
@pytest.mark.parametrize("escaped", [False, True])
def test_a_session_url_is_redacted_even_when_the_body_escapes_its_name(escaped: bool) -> None:
    # parse_event skips the redaction's copy for bodies that cannot name a session.
    from portal_service.mirror.events import parse_event

    session = {"id": "bps_1", "object": "billing_portal.session", "url": "https://x.test/s"}
    body = json.dumps(make_event("billing_portal.session.created", session)).encode()
    if escaped:
        body = body.replace(b"billing_portal.session", b"billing\\u005fportal.session")
    received = parse_event(body)
    assert "url" not in received.payload["data"]["object"]
    assert received.payload["data"]["object"]["object"] == "billing_portal.session"


async def test_the_fast_lane_answers_as_the_route_does(client: Any) -> None:
    from sqlalchemy import event as sa_event

    from portal_service.ops.metrics import HTTP_REQUESTS
    from support import deliver

    def labelled() -> float:
        return HTTP_REQUESTS.labels(route="/webhooks", method="POST", status="200")._value.get()

    before = labelled()
    fast = await deliver(
        client, make_event("customer.subscription.updated", subscription("sub_l1"), created=T0)
    )
    # A statement hook sends the next delivery through FastAPI's route and the general path.
    engine = client.app.state.engine.sync_engine
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        routed = await deliver(
            client, make_event("customer.subscription.updated", subscription("sub_l2"), created=T0)
        )
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    assert seen  # the second one did go through the session
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content == b'{"received":true,"status":"processed"}'
    volatile = {"x-request-id", "date"}
    assert {k: v for k, v in fast.headers.items() if k not in volatile} == {
        k: v for k, v in routed.headers.items() if k not in volatile
    }
    assert labelled() == before + 2


async def test_the_fast_lane_hands_a_bad_signature_to_the_route(client: Any) -> None:
    from support import signed_headers

    body = json.dumps(make_event("customer.subscription.updated", subscription("sub_l3"))).encode()
    answer = await client.post(
        "/webhooks", content=body, headers=signed_headers(body, secret="whsec_wrong")
    )
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "invalid_signature"


@pytest.mark.sqlite
@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (b"123456789012345678901234567890", 123456789012345678901234567890),
        (b"-9223372036854775809", -9223372036854775809),
        (b"18446744073709551615", 18446744073709551615),
        (b"1.5", 1.5),
    ],
)
def test_parse_event_decodes_numbers_as_json_does(number: bytes, expected: Any) -> None:
    # orjson decodes first; it would make an integer beyond 64 bits a float.
    from portal_service.mirror.events import parse_event

    body = json.dumps(make_event("customer.updated", customer("cus_n"))).encode()
    body = body.replace(b'"object": "customer"', b'"object": "customer", "n": ' + number)
    value = parse_event(body).payload["data"]["object"]["n"]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.sqlite
@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_parse_event_still_refuses_non_json_constants(constant: bytes) -> None:
    from portal_service.errors import InvalidPayload
    from portal_service.mirror.events import parse_event

    body = json.dumps(make_event("customer.updated", customer("cus_n"))).encode()
    body = body.replace(b'"object": "customer"', b'"object": "customer", "n": ' + constant)
    with pytest.raises(InvalidPayload):
        parse_event(body)


@pytest.mark.parametrize("row_before", [False, True])
async def test_a_row_committed_while_the_fast_path_waits_on_the_lock_is_seen(
    engine: AsyncEngine, rows: Any, row_before: bool
) -> None:
    """The fast path's first statement reads the row after the lock is granted, though its
    snapshot is older: an updated row through FOR UPDATE, a row inserted meanwhile through
    the write's conflict (then the general path decides). Either way the older event loses."""
    import asyncio

    from portal_service.mirror.apply import apply_object
    from portal_service.mirror.locks import lock_object
    from portal_service.mirror.ordering import Source
    from portal_service.mirror.tables import Subscription, SubscriptionItem

    sessionmaker = create_sessionmaker(engine)
    processor = EventProcessor(
        sessionmaker,
        _NoStripe(),  # type: ignore[arg-type]
        livemode=False,
        accept_other_mode_events=False,
    )
    if row_before:
        first = make_event("customer.subscription.updated", subscription("sub_w"), created=T0)
        assert await processor.receive(received_from(first)) == "processed"
    newer = subscription(
        "sub_w", status="past_due", items=[item("si_new", subscription_id="sub_w")]
    )
    older = make_event(
        "customer.subscription.updated", subscription("sub_w", status="unpaid"), created=T0 + 5
    )
    async with sessionmaker() as session:
        # Another writer holds the object's lock and writes a newer state...
        await lock_object(session, account="", kind="subscription", object_id="sub_w")
        when = dt.datetime.fromtimestamp(T0 + 10, tz=dt.UTC)
        source = Source(ts=when, event_id="evt_newer", livemode=False)
        assert str(await apply_object(session, "subscription", newer, source=source)) == "applied"
        # ...while the older event's fast path starts (its snapshot taken) and waits on it.
        waiting = asyncio.create_task(processor.receive(received_from(older)))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await session.commit()
    assert await waiting == "stale"
    stored = await rows.get(Subscription, "sub_w")
    assert (stored.status, stored.source_event_id) == ("past_due", "evt_newer")
    assert [i.id for i in await rows.all(SubscriptionItem)] == ["si_new"]
    recorded: StripeEvent = await rows.event(older["id"])
    assert (recorded.status, recorded.attempts) == ("processed", 1)
