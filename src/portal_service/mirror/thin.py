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

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.gateway import Fetched, Gateway, StripeObjectMissing
from portal_service.mirror.apply import watermark
from portal_service.mirror.events import Received
from portal_service.mirror.inbox import (
    EventInProgress,
    describe_error,
    lock_event,
    mark_failed,
    mark_ignored,
    mark_processed,
    record_event,
    redelivery_done,
)
from portal_service.mirror.intake import ApplyFailed, ReplayOutcome
from portal_service.mirror.ordering import Outcome
from portal_service.mirror.projections import (
    ENTITLEMENT_SUMMARY,
    EVENT_ROUTES,
    KINDS,
    MirrorKind,
    object_id_of,
)
from portal_service.mirror.schemas import EventStatus, WebhookStatus
from portal_service.mirror.tables import StripeEvent, table_of
from portal_service.mirror.ties import Tie, fetch_answer, settle_tie
from portal_service.ops.logging import get_logger
from portal_service.ops.metrics import WEBHOOK_EVENTS

log = get_logger("portal_service.webhooks")

HEALTH_RESOLVED = "v2.core.health.event_generation_failure.resolved"
_V1_PREFIX = "v1."
# What `related_object.type` names, as mirror kinds: the ones Stripe can be asked for.
_RELATED_KINDS: dict[str, MirrorKind] = {
    kind: kind for kind, entry in KINDS.items() if entry.refetchable
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
            inserted = await record_event(
                session, received, status="ignored" if target is None else "pending", lock=None
            )
            if not inserted:
                if await redelivery_done(session, received.id):
                    await session.rollback()
                    self._done(received, "duplicate")
                    return "duplicate"
                if target is None:
                    await mark_ignored(session, received.id)
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
                await mark_ignored(session, received.id)
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
            tie = Tie(target.kind, object_id, account, received.livemode, seen)
        except (ApplyFailed, EventInProgress):
            raise
        except Exception as exc:
            await self._fail(received, exc)
            raise ApplyFailed() from exc
        for _ in range(_ATTEMPTS):
            try:
                fetched = await fetch_answer(
                    self._gateway, tie.kind, tie.object_id, account=account
                )
            except Exception as exc:
                await self._fail(received, exc)
                raise ApplyFailed() from exc
            outcome, tie = await self._apply(received, tie, fetched)
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
        self, received: Received, tie: Tie, fetched: Fetched | None
    ) -> tuple[Outcome | None, Tie]:
        """Apply Stripe's answer under the object's lock. (None, _) when another delivery
        finished the event meanwhile; REFETCH with the row's watermark now to ask again."""
        async with self._sessionmaker() as session:
            state = await lock_event(session, received.id)
            if state is None or state.status == "ignored":
                await session.rollback()
                return None, tie
            try:
                outcome, tie = await settle_tie(session, tie, fetched)
            except Exception as exc:
                await session.rollback()
                await self._fail(received, exc)
                raise ApplyFailed() from exc
            if outcome is Outcome.REFETCH:
                await session.rollback()
                return outcome, tie
            await mark_processed(session, received.id)
            await session.commit()
        return outcome, tie

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
            await lock_event(session, received.id)
            await mark_processed(session, received.id)
            await session.commit()
        self._done(received, "duplicate")
        return "duplicate"

    async def _ignore(self, received: Received, reason: str) -> Literal["ignored"]:
        async with self._sessionmaker() as session:
            await lock_event(session, received.id)
            await mark_ignored(session, received.id, error=reason)
            await session.commit()
        log.warning("thin_event_unresolved", event_id=received.id, type=received.type)
        self._done(received, "ignored")
        return "ignored"

    async def _fail(self, received: Received, exc: BaseException) -> None:
        error = describe_error(exc)
        async with self._sessionmaker() as session:
            await lock_event(session, received.id)
            await mark_failed(session, received.id, error=error)
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
