"""Thin events (Stripe's event destinations, `object: "v2.core.event"`; README.md, "Pointing
Stripe's webhooks at it").

A thin event names an object (`related_object`) instead of carrying it. It is recorded
like any delivery, its object is fetched from Stripe outside any transaction, and the answer
is applied through the same upsert path as a snapshot event's object, stamped with Stripe's
`Date` (`apply_answer`). Thin events are rare, so this path spends a transaction more than
the snapshot one: the row is committed `pending` before Stripe is asked.

Deduplication against the snapshot twin (`snapshot_event`, where Stripe links them): a thin
event whose twin is already applied fetches nothing (answered `duplicate`); a twin arriving
after its thin event is older than, or ties with, the fetched state, and the watermark
settles it like any other event.

`v1.<type>` thin events route like their snapshot `<type>`; a
`v2.core.health.event_generation_failure.resolved` re-fetches the object it names (Stripe
failed to generate an event for it). Anything else is recorded as `ignored`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.db import utcnow
from portal_service.gateway import Fetched, Gateway, ObjectKind, StripeObjectMissing
from portal_service.mirror.apply import apply_answer, watermark
from portal_service.mirror.intake import (
    ApplyFailed,
    EventInProgress,
    Received,
    ReplayOutcome,
    describe_error,
    redelivery_done,
)
from portal_service.mirror.ordering import Outcome, Watermark
from portal_service.mirror.projections import (
    ENTITLEMENT_SUMMARY,
    EVENT_ROUTES,
    MirrorKind,
    object_id_of,
)
from portal_service.mirror.schemas import EventStatus, WebhookStatus
from portal_service.mirror.tables import StripeEvent, table_of
from portal_service.ops.logging import get_logger
from portal_service.ops.metrics import WEBHOOK_EVENTS

log = get_logger("portal_service.webhooks")

HEALTH_RESOLVED = "v2.core.health.event_generation_failure.resolved"
_V1_PREFIX = "v1."
# What `related_object.type` names, as mirror kinds (the ones Stripe can be asked for).
_RELATED_KINDS: dict[str, MirrorKind] = {
    "customer": "customer",
    "subscription": "subscription",
    "invoice": "invoice",
    "payment_method": "payment_method",
    "tax_id": "tax_id",
    "billing_portal.configuration": "billing_portal.configuration",
    "entitlements.active_entitlement_summary": ENTITLEMENT_SUMMARY,
}
_RETRIEVABLE: dict[MirrorKind, ObjectKind] = {
    "customer": "customer",
    "subscription": "subscription",
    "payment_method": "payment_method",
    "invoice": "invoice",
    "tax_id": "tax_id",
    "billing_portal.configuration": "billing_portal.configuration",
}
_ATTEMPTS = 3  # fetches of one thin event while events of the answer's second keep arriving
_EVENTS = table_of(StripeEvent)


@dataclass(frozen=True, slots=True)
class Target:
    """The mirror object a thin event is about; `object_id` None when the event does not
    say (an entitlement summary has no id: its customer is learnt from the snapshot twin)."""

    kind: MirrorKind
    object_id: str | None


def target_of(payload: dict[str, Any]) -> Target | None:
    """What a thin event asks the mirror to re-read, or None (recorded as ignored)."""
    event_type = payload.get("type")
    related = payload.get("related_object")
    related = related if isinstance(related, dict) else {}
    related_type = related.get("type")
    related_id = related.get("id")
    related_id = related_id if isinstance(related_id, str) and related_id else None
    if isinstance(related_type, str) and related_type.startswith(_V1_PREFIX):
        related_type = related_type[len(_V1_PREFIX) :]
    if not isinstance(event_type, str):
        return None
    if event_type.startswith(_V1_PREFIX):
        route = EVENT_ROUTES.get(event_type[len(_V1_PREFIX) :])
        if route is None or route.kind not in _RELATED_KINDS.values():
            # Portal sessions cannot be retrieved from Stripe: nothing to fetch.
            return None
        kind = route.kind
    elif event_type == HEALTH_RESOLVED:
        if not isinstance(related_type, str) or related_type not in _RELATED_KINDS:
            return None
        kind = _RELATED_KINDS[related_type]
    else:
        return None
    if kind == ENTITLEMENT_SUMMARY:
        # A summary is keyed by its customer: usable only when that is what is named.
        return Target(kind, related_id if related_id and related_id.startswith("cus_") else None)
    if related_type is not None and _RELATED_KINDS.get(related_type) not in (None, kind):
        return None  # names an object of another kind than its type says: not ours to guess
    return Target(kind, related_id)


def snapshot_event_of(payload: dict[str, Any]) -> str | None:
    twin = payload.get("snapshot_event")
    return twin if isinstance(twin, str) and twin.startswith("evt_") else None


@dataclass(frozen=True, slots=True)
class _State:
    status: str
    received_at: Any


class ThinEvents:
    """Records and applies thin events; EventProcessor hands them here."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: Gateway,
        *,
        livemode: bool,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._gateway = gateway
        self._livemode = livemode

    def _target(self, received: Received) -> Target | None:
        # Nothing to fetch without Stripe (offline mode), nor for the other mode's events:
        # this key cannot read their objects, and a 404 would tombstone an object that
        # exists. ACCEPT_OTHER_MODE_EVENTS applies to snapshot events, which carry theirs.
        if self._gateway.offline or received.livemode != self._livemode:
            return None
        return target_of(received.payload)

    async def receive(self, received: Received) -> WebhookStatus:
        """Record and apply one thin delivery. Raises ApplyFailed / EventInProgress (500)."""
        target = self._target(received)
        async with self._sessionmaker() as session:
            inserted = await _insert(session, received, ignored=target is None)
            if not inserted:
                if await redelivery_done(session, received.id):
                    await session.rollback()
                    self._done(received, "duplicate")
                    return "duplicate"
                if target is None:
                    await _finish(session, received.id, "ignored")
            # Durable before Stripe is asked; no transaction is held across the call.
            await session.commit()
        if target is None:
            self._done(received, "ignored")
            return "ignored"
        return await self._settle(received, target, replaying=False)

    async def replay(self, received: Received) -> tuple[EventStatus, ReplayOutcome]:
        """Re-apply a recorded thin event whatever its status (its object is fetched again)."""
        target = self._target(received)
        if target is None:
            async with self._sessionmaker() as session:
                await _finish(session, received.id, "ignored")
                await session.commit()
            self._done(received, "ignored")
            return "ignored", "ignored"
        result = await self._settle(received, target, replaying=True)
        if result == "ignored":
            return "ignored", "ignored"
        return "processed", "stale" if result == "stale" else "processed"

    async def _settle(
        self, received: Received, target: Target, *, replaying: bool
    ) -> Literal["processed", "stale", "duplicate", "ignored"]:
        account = received.account
        twin = snapshot_event_of(received.payload)
        try:
            if twin is not None and not replaying and await self._applied(twin):
                # Its snapshot twin already carried this change into the mirror.
                return await self._finish_twin(received)
            object_id = target.object_id
            if object_id is None:
                object_id = await self._resolve(received, target, twin)
            if object_id is None:
                # Stripe's event names nothing this mirror can look up.
                return await self._ignore(received, "the thin event names no object")
            async with self._sessionmaker() as session:
                seen = await watermark(session, target.kind, object_id)
        except (ApplyFailed, EventInProgress):
            raise
        except Exception as exc:
            await self._fail(received, exc)
            raise ApplyFailed() from exc
        for _ in range(_ATTEMPTS):
            try:
                fetched = await self._fetch(target.kind, object_id, account)
            except Exception as exc:
                await self._fail(received, exc)
                raise ApplyFailed() from exc
            outcome, seen = await self._apply(received, target.kind, object_id, fetched, seen)
            if outcome is None:
                self._done(received, "duplicate")
                return "duplicate"
            if outcome is Outcome.REFETCH:
                continue
            WEBHOOK_EVENTS.labels(type=received.type, result="refetched").inc()
            result: Literal["processed", "stale"] = (
                "stale" if outcome is Outcome.STALE else "processed"
            )
            self._done(received, result)
            return result
        unsettled = RuntimeError("Stripe's answers kept tying with events applied meanwhile")
        await self._fail(received, unsettled)
        raise ApplyFailed() from unsettled

    async def _apply(
        self,
        received: Received,
        kind: MirrorKind,
        object_id: str,
        fetched: Fetched | None,
        seen: Watermark | None,
    ) -> tuple[Outcome | None, Watermark | None]:
        """Apply Stripe's answer under the object's lock. (None, _) when another delivery
        finished the event meanwhile; REFETCH with the row's watermark now to ask again."""
        async with self._sessionmaker() as session:
            state = await _lock(session, received.id)
            if state is None or state.status == "ignored":
                await session.rollback()
                return None, seen
            try:
                async with session.begin_nested():
                    outcome = await apply_answer(
                        session,
                        kind,
                        object_id,
                        fetched,
                        account=received.account,
                        livemode=received.livemode,
                        supersedes=seen,
                    )
                    if outcome is Outcome.REFETCH:
                        seen = await watermark(session, kind, object_id)
            except Exception as exc:
                await session.rollback()
                await self._fail(received, exc)
                raise ApplyFailed() from exc
            if outcome is Outcome.REFETCH:
                await session.rollback()
                return outcome, seen
            await _finish(session, received.id, "processed")
            await session.commit()
        return outcome, seen

    async def _fetch(self, kind: MirrorKind, object_id: str, account: str) -> Fetched | None:
        """Stripe's current object, or None when Stripe no longer has it (a tombstone)."""
        try:
            if kind == ENTITLEMENT_SUMMARY:
                return await self._gateway.list_active_entitlements(object_id, account=account)
            return await self._gateway.retrieve(_RETRIEVABLE[kind], object_id, account=account)
        except StripeObjectMissing:
            return None

    async def _resolve(self, received: Received, target: Target, twin: str | None) -> str | None:
        """The object id a thin event leaves out, from its snapshot twin: named in the
        delivery or, failing that, in the event as Stripe's v2 Events API holds it."""
        if twin is None:
            try:
                event = await self._gateway.retrieve_thin_event(
                    received.id, account=received.account
                )
            except StripeObjectMissing:
                return None  # older than Stripe's 30 days of events
            twin = snapshot_event_of(event.object)
        if twin is None:
            return None
        try:
            snapshot = await self._gateway.retrieve("event", twin, account=received.account)
        except StripeObjectMissing:
            return None  # older than Stripe's 30 days of events
        data = snapshot.object.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if not isinstance(obj, dict):
            return None
        try:
            return object_id_of(target.kind, obj)
        except ValueError:
            return None

    async def _applied(self, event_id: str) -> bool:
        async with self._sessionmaker() as session:
            status = (
                await session.execute(select(_EVENTS.c.status).where(_EVENTS.c.id == event_id))
            ).scalar_one_or_none()
        return status == "processed"

    async def _finish_twin(self, received: Received) -> Literal["duplicate"]:
        async with self._sessionmaker() as session:
            await _lock(session, received.id)
            await _finish(session, received.id, "processed")
            await session.commit()
        self._done(received, "duplicate")
        return "duplicate"

    async def _ignore(self, received: Received, reason: str) -> Literal["ignored"]:
        async with self._sessionmaker() as session:
            await _lock(session, received.id)
            await _finish(session, received.id, "ignored", error=reason)
            await session.commit()
        log.warning("thin_event_unresolved", event_id=received.id, type=received.type)
        self._done(received, "ignored")
        return "ignored"

    async def _fail(self, received: Received, exc: BaseException) -> None:
        error = describe_error(exc)
        async with self._sessionmaker() as session:
            await _lock(session, received.id)
            await _finish(session, received.id, "failed", error=error)
            await session.commit()
        WEBHOOK_EVENTS.labels(type=received.type, result="failed").inc()
        log.warning("webhook_apply_failed", event_id=received.id, type=received.type, error=error)

    def _done(self, received: Received, result: WebhookStatus) -> None:
        WEBHOOK_EVENTS.labels(type=received.type, result=result).inc()
        log.info(
            "webhook_event",
            event_id=received.id,
            type=received.type,
            account=received.account,
            result=result,
            thin=True,
        )


async def _insert(session: AsyncSession, received: Received, *, ignored: bool) -> bool:
    now = utcnow()
    values: dict[str, Any] = {
        "id": received.id,
        "type": received.type,
        "api_version": received.api_version,
        "created": received.created,
        "livemode": received.livemode,
        "account": received.account,
        "payload": received.payload,
        "received_at": now,
        "status": "ignored" if ignored else "pending",
        "attempts": 0,
        "processed_at": now if ignored else None,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(_EVENTS).values(values).on_conflict_do_nothing(index_elements=["id"])
    ).returning(_EVENTS.c.id)
    return (await session.execute(statement)).first() is not None


async def _lock(session: AsyncSession, event_id: str) -> _State | None:
    statement = (
        select(_EVENTS.c.status, _EVENTS.c.received_at)
        .where(_EVENTS.c.id == event_id)
        .with_for_update()
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else _State(status=row.status, received_at=row.received_at)


async def _finish(
    session: AsyncSession, event_id: str, status: EventStatus, *, error: str | None = None
) -> None:
    values: dict[str, Any] = {"status": status, "processed_at": utcnow()}
    if status != "ignored":
        values["attempts"] = _EVENTS.c.attempts + 1
    if status == "failed":
        values["processed_at"] = None
    if error is not None:
        values["last_error"] = error
    await session.execute(update(_EVENTS).where(_EVENTS.c.id == event_id).values(values))
