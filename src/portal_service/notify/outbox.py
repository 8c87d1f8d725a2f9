"""The outbox: an `access.changed` row written in the transaction of the apply that changed
a customer's entitlements answer (README.md, "Being told when access changes").

Two steps, so that one transaction writing many objects (a sync page) never deadlocks
with a webhook for the same customer:

1. `before_write` (the mirror's apply hook, under the object's lock): remember which
   customers the write may move, and each one's answer before this transaction touched it.
2. At commit (`before_commit` of the root transaction), for each of them in a fixed
   order: take the customer's notification lock, compute the answer again, compare with
   the last one enqueued (or, with no history, with the answer from step 1) and write the
   row, coalescing into a pending one still inside its window. The lock is the last one
   the transaction takes, so concurrent writers of one customer are serialised here and
   the later one sees the earlier one's committed mirror rows and outbox row.

A rolled-back transaction never reaches the commit, and a rolled-back savepoint leaves
the mirror as it was, so step 2 finds no change: no notification without its change.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, bindparam, delete, event, insert, literal, select, true, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from portal_service.access.entitlements import entitlements_answer
from portal_service.access.facts import (
    CustomerAccess,
    customer_access,
    customer_access_from_rows,
    customer_access_query,
)
from portal_service.access.policy import AccessPolicy
from portal_service.config import Settings
from portal_service.db import create_sessionmaker, utcnow
from portal_service.mirror.locks import lock_call, lock_key
from portal_service.mirror.observers import APPLY_OBSERVER
from portal_service.mirror.projections import ENTITLEMENT_SUMMARY
from portal_service.mirror.tables import PLATFORM_ACCOUNT, Customer, table_of
from portal_service.notify.tables import Notification

GIVE_UP_AFTER = timedelta(days=3)
_PENDING = "portal_service.notify.pending"
_WRITTEN = "portal_service.notify.written"

_NOTIFICATIONS = table_of(Notification)
_CUSTOMERS = table_of(Customer)

Answer = dict[str, Any]
CustomerKey = tuple[bool, str]
"""(livemode, customer id): notifications are per customer and mode, platform account only."""


def policy_of(settings: Settings) -> AccessPolicy:
    return AccessPolicy(
        past_due_grace_days=settings.access_past_due_grace_days,
        access_during_paused_collection=settings.access_during_paused_collection,
    )


def _id_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _newest_statement() -> Any:
    newest = (
        select(
            _NOTIFICATIONS.c.id,
            _NOTIFICATIONS.c.seq,
            _NOTIFICATIONS.c.since,
            _NOTIFICATIONS.c.current,
            _NOTIFICATIONS.c.status,
            _NOTIFICATIONS.c.attempts,
            _NOTIFICATIONS.c.next_attempt_at,
            _NOTIFICATIONS.c.app_user_id,
        )
        .where(
            _NOTIFICATIONS.c.livemode == bindparam("livemode", type_=Boolean()),
            _NOTIFICATIONS.c.customer_id == bindparam("customer_id"),
        )
        .order_by(_NOTIFICATIONS.c.seq.desc())
        .limit(1)
        .subquery("newest")
    )
    user = (
        select(_CUSTOMERS.c.app_user_id)
        .where(
            _CUSTOMERS.c.id == bindparam("customer_id"),
            _CUSTOMERS.c.account == PLATFORM_ACCOUNT,
        )
        .scalar_subquery()
    )
    # One row whether or not the customer has a notification yet: its app user, and the
    # newest notification's columns (NULLs when there is none).
    one = select(literal(1).label("one")).subquery("one")
    return select(user.label("customer_app_user_id"), *newest.c).select_from(
        one.outerjoin(newest, true())
    )


_NEWEST = _newest_statement()
_LOCK = select(lock_call())
_COALESCE = (
    update(_NOTIFICATIONS)
    .where(
        _NOTIFICATIONS.c.id == bindparam("notification_id"),
        _NOTIFICATIONS.c.status == "pending",
        _NOTIFICATIONS.c.attempts == 0,
    )
    .values(
        current=bindparam("current"),
        changed_at=bindparam("changed_at"),
        app_user_id=bindparam("app_user_id"),
    )
)
_WITHDRAW = delete(_NOTIFICATIONS).where(
    _NOTIFICATIONS.c.id == bindparam("notification_id"),
    _NOTIFICATIONS.c.status == "pending",
    _NOTIFICATIONS.c.attempts == 0,
)


def new_notification_id() -> str:
    return "ntf_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    policy: AccessPolicy
    coalesce: timedelta


def record_change(
    session: Session,
    config: OutboxConfig,
    key: CustomerKey,
    *,
    now: datetime,
    baseline: Callable[[CustomerAccess | None], Answer],
) -> str | None:
    """Enqueue (or coalesce) the customer's notification if its answer differs from the
    last one enqueued; `baseline(facts)` gives the answer to compare with when the customer
    has no notification yet. Synchronous: it runs inside the commit. Returns the id of the
    row written or updated, None when nothing changed."""
    livemode, customer_id = key
    if session.get_bind().dialect.name == "postgresql":
        mode = "live" if livemode else "test"
        lock = lock_key(PLATFORM_ACCOUNT, f"notify:{mode}", customer_id)
        session.execute(_LOCK, {"lock_key": lock})
    statement, parameters = customer_access_query(livemode=livemode, customer_id=customer_id)
    facts = customer_access_from_rows(
        session.execute(statement, parameters).all(), livemode=livemode
    )
    answer = entitlements_answer(customer_id, facts, policy=config.policy, now=now)
    newest = session.execute(_NEWEST, {"livemode": livemode, "customer_id": customer_id}).one()
    last: Answer = newest.current if newest.id is not None else baseline(facts)
    if answer == last:
        return None
    app_user_id = newest.customer_app_user_id or newest.app_user_id
    open_window = (
        newest.id is not None
        and newest.status == "pending"
        and newest.attempts == 0
        and newest.next_attempt_at > now
    )
    if open_window:
        if answer == newest.since:
            # Changed and changed back inside the window: nothing left to tell.
            if session.execute(_WITHDRAW, {"notification_id": newest.id}).rowcount == 1:  # type: ignore[attr-defined]  # a CursorResult
                return None
        else:
            coalesced = session.execute(
                _COALESCE,
                {
                    "notification_id": newest.id,
                    "current": answer,
                    "changed_at": now,
                    "app_user_id": app_user_id,
                },
            )
            if coalesced.rowcount == 1:  # type: ignore[attr-defined]  # a CursorResult
                return str(newest.id)
        # Picked up by a delivery meanwhile: a new row follows it.
    notification_id = new_notification_id()
    session.execute(
        insert(_NOTIFICATIONS).values(
            id=notification_id,
            customer_id=customer_id,
            livemode=livemode,
            seq=(newest.seq or 0) + 1,
            app_user_id=app_user_id,
            since=last,
            current=answer,
            changed_at=now,
            created_at=now,
            status="pending",
            attempts=0,
            next_attempt_at=now + config.coalesce,
            give_up_at=now + GIVE_UP_AFTER,
        )
    )
    return notification_id


def _customers_moved(
    kind: str, object_id: str, before: Mapping[str, Any] | None, after: Mapping[str, Any]
) -> set[str]:
    if kind in ("customer", ENTITLEMENT_SUMMARY):
        return {object_id}
    # A subscription (or, with a past_due grace, an invoice) moves its customer's answer,
    # and the one it belonged to before should it ever change hands.
    found = {_id_of(after.get("customer"))}
    if before is not None:
        found.add(_id_of(before.get("customer")))
    return {customer for customer in found if customer is not None}


class Outbox:
    """The mirror's apply observer (mirror.observers) writing the outbox."""

    def __init__(self, config: OutboxConfig) -> None:
        self.config = config
        # Called after a commit that wrote a notification: the process's delivery loop
        # wakes at once instead of at its next poll.
        self.on_written: Callable[[], None] | None = None
        # Invoices only move the answer through the past_due grace (README.md, "Deciding access in your app").
        self._kinds = {"customer", "subscription", ENTITLEMENT_SUMMARY}
        if config.policy.past_due_grace_days > 0:
            self._kinds.add("invoice")

    async def before_write(
        self,
        session: AsyncSession,
        *,
        kind: str,
        object_id: str,
        account: str,
        livemode: bool,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any],
    ) -> None:
        # Apps see the platform account only (access.facts): Connect accounts have no answer.
        if kind not in self._kinds or account != PLATFORM_ACCOUNT:
            return
        pending: dict[CustomerKey, Answer] = session.info.setdefault(_PENDING, {})
        for customer_id in _customers_moved(kind, object_id, before, after):
            key = (livemode, customer_id)
            if key in pending:
                continue  # the answer before this transaction is already known
            facts = await customer_access(session, livemode=livemode, customer_id=customer_id)
            pending[key] = entitlements_answer(
                customer_id, facts, policy=self.config.policy, now=utcnow()
            )

    def flush(self, session: Session) -> None:
        """Inside the root commit: one notification per customer whose answer moved."""
        if session.in_nested_transaction():
            return  # a savepoint: the root commit comes later
        pending: dict[CustomerKey, Answer] | None = session.info.pop(_PENDING, None)
        if not pending:
            return
        now = utcnow()
        written = False
        # A fixed order: two transactions never wait on each other's customers crosswise.
        for key in sorted(pending):
            baseline = _constant(pending[key])
            if record_change(session, self.config, key, now=now, baseline=baseline):
                written = True
        if written:
            session.info[_WRITTEN] = True


def _constant(answer: Answer) -> Callable[[CustomerAccess | None], Answer]:
    return lambda _facts: answer


class OutboxSession(Session):
    """The session class of a sessionmaker with an outbox (`install_outbox`)."""


@event.listens_for(OutboxSession, "before_commit")
def _flush_outbox(session: Session) -> None:
    outbox = session.info.get(APPLY_OBSERVER)
    if isinstance(outbox, Outbox):
        outbox.flush(session)


@event.listens_for(OutboxSession, "after_commit")
def _wake_delivery(session: Session) -> None:
    outbox = session.info.get(APPLY_OBSERVER)
    if session.info.pop(_WRITTEN, False) and isinstance(outbox, Outbox) and outbox.on_written:
        outbox.on_written()


@event.listens_for(OutboxSession, "after_transaction_end")
def _forget_pending(session: Session, transaction: Any) -> None:
    # A rolled-back transaction leaves no customer behind for the session's next one.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_WRITTEN, None)


def install_outbox(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> async_sessionmaker[AsyncSession]:
    """Make every session of `sessionmaker` write the outbox (when NOTIFY_URL is set)."""
    if settings.notify_url is None:
        return sessionmaker
    outbox = Outbox(
        OutboxConfig(
            policy=policy_of(settings),
            coalesce=timedelta(seconds=settings.notify_coalesce_seconds),
        )
    )
    sessionmaker.configure(sync_session_class=OutboxSession, info={APPLY_OBSERVER: outbox})
    return sessionmaker


def outbox_sessionmaker(
    engine: AsyncEngine, settings: Settings
) -> async_sessionmaker[AsyncSession]:
    """The read-write sessionmaker of the app and of the CLI commands that apply objects."""
    return install_outbox(create_sessionmaker(engine), settings)
