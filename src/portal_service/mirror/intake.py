"""Webhook intake: record each verified event (mirror/inbox.py) and apply it (mirror/apply.py),
as ARCHITECTURE.md, "Webhook processing" describes.

Record-then-apply in one transaction per event: the event row is inserted (ON CONFLICT DO
NOTHING) already marked `processed`, the object's lock taken by that same statement, and
the apply runs in that transaction; the commit makes row and apply durable together. If the
apply fails, the transaction is rolled back and the event recorded as `failed` in a new one
(no savepoint: two round trips less on every event): nothing is acknowledged before one of
the two commits, so the event is either recorded or delivered again by Stripe, and a
redelivery (or replay) applies it. An event already recorded (a redelivery, a replay) is
applied inside a savepoint instead, since its row must stay whatever the apply does.

A same-second tie that only Stripe can settle is the one case with two transactions: the
event is committed (`pending`), the transaction and lock released, Stripe asked, and the
answer applied under the lock in a second transaction (asked again if an event of the
answer's own second reached the object meanwhile).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.config import Settings
from portal_service.errors import (
    DomainError,
    EventNotFound,
)
from portal_service.gateway import Gateway
from portal_service.mirror.apply import apply_object, watermark
from portal_service.mirror.events import Received, received_from
from portal_service.mirror.inbox import (
    describe_error,
    event_values,
    insert_event_statement,
    lock_event,
    mark_failed,
    mark_ignored,
    mark_processed,
    record_event,
    redelivery_done,
    wait_on_stripe,
)
from portal_service.mirror.intake_pg import FastIntake
from portal_service.mirror.intake_pool import IntakePool
from portal_service.mirror.locks import lock_key, lock_object
from portal_service.mirror.ordering import Outcome, Source, parse_incoming
from portal_service.mirror.projections import (
    EVENT_ROUTES,
    EventRoute,
    object_id_of,
)
from portal_service.mirror.schemas import EventStatus, WebhookStatus
from portal_service.mirror.ties import Tie, fetch_answer, settle_tie
from portal_service.ops.logging import get_logger
from portal_service.ops.metrics import WEBHOOK_APPLY_SECONDS, WEBHOOK_EVENTS

if TYPE_CHECKING:
    from portal_service.mirror.thin import ThinEvents

log = get_logger("portal_service.webhooks")
ReplayOutcome = Literal["processed", "ignored", "stale"]

# Re-fetches of one tie: more are needed only while events of the answers' own second
# keep arriving, which ends when Stripe's clock moves on.
_REFETCH_ATTEMPTS = 3


class ApplyFailed(DomainError):
    status = 500
    code = "apply_failed"
    default_detail = (
        "The event was recorded but could not be applied; a redelivery or a replay applies it."
    )


class RefetchUnsettled(Exception):
    """Each answer from Stripe came in the second of an event that reached the row while
    Stripe was being asked: the tie stays open until a redelivery or replay."""


def _count(event_type: str, result: str) -> None:
    WEBHOOK_EVENTS.labels(type=event_type, result=result).inc()


def _lock_for(session: AsyncSession, received: Received, route: EventRoute | None) -> int | None:
    """The object lock the event insert should take, or None: nothing to apply, an object
    without an id (the apply fails on it), or SQLite (no object locks there)."""
    if route is None or received.event is None:
        return None
    if session.get_bind().dialect.name != "postgresql":
        return None
    try:
        object_id = object_id_of(route.kind, received.event.data.object)
    except ValueError:
        return None
    return lock_key(received.account, route.kind, object_id)


class EventProcessor:
    """Records and applies events: webhook deliveries, admin replays and the CLI's replay."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: Gateway,
        *,
        livemode: bool,
        accept_other_mode_events: bool,
        fast_path: bool = True,
        intake_pool: IntakePool | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        # PostgreSQL: new events skip SQLAlchemy's execution layer (mirror/intake_pg.py),
        # on the app's `intake_pool` when there is one.
        self._fast = FastIntake.for_sessionmaker(sessionmaker, intake_pool) if fast_path else None
        self._gateway = gateway
        self._livemode = livemode
        self._accept_other_mode = accept_other_mode_events

    @classmethod
    def for_settings(
        cls,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: Gateway,
        settings: Settings,
        *,
        intake_pool: IntakePool | None = None,
    ) -> EventProcessor:
        return cls(
            sessionmaker,
            gateway,
            livemode=settings.livemode,
            accept_other_mode_events=settings.accept_other_mode_events,
            intake_pool=intake_pool,
        )

    def _thin(self) -> ThinEvents:
        from portal_service.mirror.thin import ThinEvents  # thin.py builds on this module

        return ThinEvents(self._sessionmaker, self._gateway, livemode=self._livemode)

    def _route(self, received: Received) -> EventRoute | None:
        if received.event is None:
            return None
        # Events of the other mode (a test event on a live deployment) never reach the mirror.
        if received.livemode != self._livemode and not self._accept_other_mode:
            return None
        return EVENT_ROUTES.get(received.type)

    async def receive(self, received: Received) -> WebhookStatus:
        """Record and apply one delivery. Raises ApplyFailed / EventInProgress (500)."""
        started = time.perf_counter()
        try:
            return await self._receive(received)
        finally:
            WEBHOOK_APPLY_SECONDS.observe(time.perf_counter() - started)

    @property
    def has_fast_path(self) -> bool:
        return self._fast is not None

    async def receive_fast(self, received: Received) -> WebhookStatus | None:
        """`receive` on PostgreSQL's fast path alone: None, with nothing written, when the
        event needs the general path (then `receive` does all of it)."""
        started = time.perf_counter()
        route = self._route(received)
        if route is None:
            return None
        status = await self._receive_fast(received, route)
        if status is not None:
            WEBHOOK_APPLY_SECONDS.observe(time.perf_counter() - started)
        return status

    async def _receive(self, received: Received) -> WebhookStatus:
        if received.event is None:  # a thin event: its own, rarer path (mirror/thin.py)
            return await self._thin().receive(received)
        route = self._route(received)
        if route is not None:
            fast = await self._receive_fast(received, route)
            if fast is not None:
                return fast
        async with self._sessionmaker() as session:
            inserted = await record_event(
                session,
                received,
                status="processed" if route is not None else "ignored",
                lock=_lock_for(session, received, route),
            )
            if inserted and route is None:
                await session.commit()
                self._done(received, "ignored")
                return "ignored"
            if not inserted and await redelivery_done(session, received.id):
                await session.rollback()
                self._done(received, "duplicate")
                return "duplicate"
            result = await self._apply(session, received, route, fresh=inserted)
        if isinstance(result, Tie):
            return await self._apply_refetched(received, result)
        return result

    async def _receive_fast(self, received: Received, route: EventRoute) -> WebhookStatus | None:
        """The PostgreSQL fast path for a new event; None when the general path must take it
        (it was recorded before, Stripe must settle a tie, or anything failed)."""
        if self._fast is None:
            return None
        obj = received.payload["data"]["object"]
        try:
            object_id = object_id_of(route.kind, obj)
            incoming = parse_incoming(route.kind, obj, route.action)
        except Exception:  # the general path records it failed
            return None
        lock = lock_key(received.account, route.kind, object_id)
        outcome = await self._fast.receive(
            event=event_values(received, status="processed", lock=lock),
            insert_event=insert_event_statement("postgresql", locking=True),
            kind=route.kind,
            object_id=object_id,
            incoming=incoming,
            source=self._source(received),
        )
        if outcome is None:
            return None
        result: ReplayOutcome = "stale" if outcome is Outcome.STALE else "processed"
        self._done(received, result)
        return result

    def _source(self, received: Received) -> Source:
        return Source(
            ts=received.created,
            event_id=received.id,
            livemode=received.livemode,
            account=received.account,
            # Stripe cannot settle a tie when there is no Stripe (offline mode) or when
            # this key cannot see the object (an accepted event of the other mode: the
            # re-fetch would answer 404 and tombstone an object that exists).
            settle_ties_locally=self._gateway.offline or received.livemode != self._livemode,
        )

    async def replay(self, event_id: str) -> tuple[EventStatus, ReplayOutcome]:
        """Re-apply a recorded event through the same path, whatever its status.
        Returns (its recorded status now, what happened). Raises EventNotFound, ApplyFailed."""
        async with self._sessionmaker() as session:
            state = await lock_event(session, event_id, with_payload=True)
            if state is None or state.payload is None:
                raise EventNotFound()
            received = received_from(state.payload)
            if received.event is None:  # a thin event (mirror/thin.py)
                await session.rollback()
                return await self._thin().replay(received)
            applied = await self._apply(session, received, self._route(received), fresh=False)
        if not isinstance(applied, Tie):
            return ("ignored" if applied == "ignored" else "processed"), applied
        refetched = await self._apply_refetched(received, applied)
        # duplicate: another delivery finished it while Stripe was being asked.
        return "processed", "processed" if refetched == "duplicate" else refetched

    async def _apply(
        self, session: AsyncSession, received: Received, route: EventRoute | None, *, fresh: bool
    ) -> ReplayOutcome | Tie:
        """With the event row inserted or locked: apply it, mark it, commit. `fresh`: this
        transaction inserted the row, already marked `processed` and holding the object's
        lock (`record_event`)."""
        if route is None or received.event is None:
            await mark_ignored(session, received.id)
            await session.commit()
            self._done(received, "ignored")
            return "ignored"
        # The recorded payload's copy of the object: its session URLs were removed when the
        # event was received, so the apply need not redact it again.
        obj = received.payload["data"]["object"]
        source = self._source(received)
        try:
            object_id = object_id_of(route.kind, obj)
            if fresh:
                outcome = await apply_object(
                    session, route.kind, obj, source=source, action=route.action
                )
            else:
                async with session.begin_nested():
                    await lock_object(
                        session, account=received.account, kind=route.kind, object_id=object_id
                    )
                    outcome = await apply_object(
                        session, route.kind, obj, source=source, action=route.action
                    )
        except Exception as exc:
            if fresh:
                await self._fail_fresh(session, received, exc)
            else:
                await self._fail(session, received, exc)
            raise ApplyFailed() from exc
        if outcome is Outcome.REFETCH:
            if fresh:
                # Not processed after all: it waits on Stripe, and that attempt is
                # counted when it ends (_apply_refetched).
                await wait_on_stripe(session, received.id)
            seen = await watermark(session, route.kind, object_id)
            # Durable before Stripe is called; the transaction (and the lock) end here.
            await session.commit()
            return Tie(route.kind, object_id, received.account, received.livemode, seen)
        if not fresh:
            await mark_processed(session, received.id)
        await session.commit()
        result: ReplayOutcome = "stale" if outcome is Outcome.STALE else "processed"
        self._done(received, result)
        return result

    async def _apply_refetched(
        self, received: Received, tie: Tie
    ) -> Literal["processed", "stale", "duplicate"]:
        """Settle a tie with Stripe's answer: fetched outside any transaction, applied under
        the lock and stamped with Stripe's Date (`settle_tie`). Asked again when an event
        from the answer's own second reached the row meanwhile."""
        for _ in range(_REFETCH_ATTEMPTS):
            try:
                answer = await fetch_answer(
                    self._gateway, tie.kind, tie.object_id, account=tie.account
                )
            except Exception as exc:
                # Stripe refused or is unreachable (or the gateway broke): the event is
                # failed, never left pending, and a redelivery or replay asks again.
                return await self._fail_refetch(received, exc)
            async with self._sessionmaker() as session:
                state = await lock_event(session, received.id)
                if state is None or state.status in ("processed", "ignored"):
                    await session.rollback()
                    self._done(received, "duplicate")
                    return "duplicate"
                try:
                    outcome, tie = await settle_tie(session, tie, answer)
                except Exception as exc:
                    await self._fail(session, received, exc)
                    raise ApplyFailed() from exc
                if outcome is Outcome.REFETCH:
                    # Nothing written; the lock goes before Stripe is asked again.
                    await session.rollback()
                    continue
                await mark_processed(session, received.id)
                await session.commit()
            _count(received.type, "refetched")
            refetched: Literal["processed", "stale"] = (
                "stale" if outcome is Outcome.STALE else "processed"
            )
            self._done(received, refetched)
            return refetched
        unsettled = RefetchUnsettled("Stripe's answers kept tying with events applied meanwhile")
        return await self._fail_refetch(received, unsettled)

    async def _fail_refetch(self, received: Received, exc: Exception) -> Literal["duplicate"]:
        """Record a tie Stripe did not settle as failed, unless another delivery finished
        the event meanwhile ("duplicate"). Raises ApplyFailed."""
        async with self._sessionmaker() as session:
            state = await lock_event(session, received.id)
            if state is not None and state.status in ("processed", "ignored"):
                await session.rollback()
                self._done(received, "duplicate")
                return "duplicate"
            await self._fail(session, received, exc)
        raise ApplyFailed() from exc

    async def _fail(self, session: AsyncSession, received: Received, exc: BaseException) -> None:
        error = describe_error(exc)
        await mark_failed(session, received.id, error=error)
        await session.commit()
        self._failed(received, error)

    async def _fail_fresh(
        self, session: AsyncSession, received: Received, exc: BaseException
    ) -> None:
        """The apply of a just-inserted event failed: nothing of its transaction is kept, the
        event row included, so the event is recorded again, `failed`, in a new one. Should a
        concurrent delivery have recorded it meanwhile, that one's row stands."""
        error = describe_error(exc)
        await session.rollback()
        await record_event(session, received, status="failed", lock=None, error=error)
        await session.commit()
        self._failed(received, error)

    def _failed(self, received: Received, error: str) -> None:
        _count(received.type, "failed")
        log.warning("webhook_apply_failed", event_id=received.id, type=received.type, error=error)

    def _done(self, received: Received, result: WebhookStatus) -> None:
        _count(received.type, result)
        log.info(
            "webhook_event",
            event_id=received.id,
            type=received.type,
            account=received.account,
            result=result,
        )
