"""The delivery loop: posts each `access.changed` to NOTIFY_URL, signed the Standard Webhooks
way, strictly in order per customer, safe with any number of replicas.

A delivery is claimed in a short transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL: two
replicas never claim one row) that moves `next_attempt_at` forward by a lease longer than
the request's timeout, and committed before the request is made: no transaction or lock
is held across the HTTP call. Only the oldest pending notification of a customer is ever
claimable, so a customer's notifications go out one after the other in `seq` order.
Failures are retried with exponential backoff and jitter until `give_up_at` (three days
after the change), then parked; a parked notification no longer holds the later ones back.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from portal_service import __version__
from portal_service.db import utcnow
from portal_service.mirror.tables import table_of
from portal_service.notify.tables import Notification
from portal_service.ops.logging import get_logger
from portal_service.ops.metrics import NOTIFICATIONS

log = get_logger("portal_service.notify")

_N = table_of(Notification)
_MAX_ERROR_LENGTH = 300


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits about base * 2**(n-1), at most
    `cap`, each delay drawn between half of it and all of it."""

    base: float = 5.0
    cap: float = 6 * 3600.0

    def delay(self, attempt: int) -> timedelta:
        ceiling = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        return timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311  # jitter, not a secret


def notification_body(row: Any, previous: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "access.changed",
        "customer_id": row.customer_id,
        "app_user_id": row.app_user_id,
        "livemode": row.livemode,
        "current": row.current,
        "previous": previous,
        "changed_at": row.changed_at.isoformat().replace("+00:00", "Z"),
    }


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: str
    attempts: int
    give_up_at: datetime
    body: dict[str, Any]


def _claimable(now: datetime) -> Any:
    earlier = _N.alias("earlier")
    delivered = _N.alias("delivered")
    # The customer's last delivered answer before this one: the body's `previous`.
    previous = (
        select(delivered.c.current)
        .where(
            delivered.c.livemode == _N.c.livemode,
            delivered.c.customer_id == _N.c.customer_id,
            delivered.c.status == "delivered",
            delivered.c.seq < _N.c.seq,
        )
        .order_by(delivered.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(
            _N.c.id,
            _N.c.customer_id,
            _N.c.livemode,
            _N.c.app_user_id,
            _N.c.current,
            _N.c.changed_at,
            _N.c.attempts,
            _N.c.give_up_at,
            previous.label("previous"),
        )
        .where(
            _N.c.status == "pending",
            _N.c.next_attempt_at <= now,
            # Strictly in order: an earlier pending one (even one waiting for its retry)
            # holds the customer's later ones back.
            ~exists().where(
                and_(
                    earlier.c.livemode == _N.c.livemode,
                    earlier.c.customer_id == _N.c.customer_id,
                    earlier.c.status == "pending",
                    earlier.c.seq < _N.c.seq,
                )
            ),
        )
        .order_by(_N.c.next_attempt_at, _N.c.id)
    )


class DeliveryLoop:
    """One per service process, started in the lifespan when NOTIFY_URL is set."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        url: str,
        secret: str,
        timeout: float,
        poll_interval: float = 1.0,
        batch: int = 20,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._url = url
        self._webhook = Webhook(secret)
        self._timeout = timeout
        # Longer than one request can take: a claim outlives its request, and is taken
        # over only when its process died mid-delivery.
        self._lease = timedelta(seconds=timeout + 30)
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._batch = batch
        self._backoff = backoff or Backoff()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            transport=transport,
            headers={"User-Agent": f"portal-service/{__version__}"},
        )

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    claimed = await self.deliver_due()
                except Exception as exc:  # the database went away: keep the loop alive
                    log.warning("notify_loop_error", error=type(exc).__name__)
                    claimed = 0
                if claimed < self._batch and not stop.is_set():
                    await self._idle(stop)
        finally:
            await self._client.aclose()

    def wake(self) -> None:
        """A notification was just committed in this process: look now."""
        self._wake.set()

    async def _idle(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=self._poll_interval, return_when="FIRST_COMPLETED")
        finally:
            for waiting in waits:
                waiting.cancel()
            self._wake.clear()

    async def deliver_due(self) -> int:
        """Claim what is due now and deliver it; returns how many were claimed."""
        claimed = await self._claim(utcnow())
        outcomes = await asyncio.gather(
            *(self._deliver(item) for item in claimed), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                # Its outcome was not recorded: the claim's lease runs out, and it is sent again.
                log.warning("notify_record_error", error=type(outcome).__name__)
            elif isinstance(outcome, BaseException):
                raise outcome
        return len(claimed)

    async def _claim(self, now: datetime) -> Sequence[_Claimed]:
        async with self._sessionmaker() as session:
            statement = _claimable(now).limit(self._batch).with_for_update(skip_locked=True, of=_N)
            rows = (await session.execute(statement)).all()
            if not rows:
                await session.rollback()
                return []
            await session.execute(
                update(_N)
                .where(_N.c.id.in_([row.id for row in rows]))
                .values(next_attempt_at=now + self._lease, attempts=_N.c.attempts + 1)
            )
            await session.commit()
        return [
            _Claimed(
                id=row.id,
                attempts=row.attempts + 1,
                give_up_at=row.give_up_at,
                body=notification_body(row, row.previous),
            )
            for row in rows
        ]

    async def _deliver(self, item: _Claimed) -> None:
        payload = json.dumps(item.body, separators=(",", ":"), sort_keys=True)
        sent_at = utcnow()
        headers = {
            "webhook-id": item.id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._webhook.sign(item.id, sent_at, payload),
            "content-type": "application/json",
        }
        error: str | None
        try:
            response = await self._client.post(self._url, content=payload, headers=headers)
            error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            # The class only: an exception's text may carry the URL, which is a secret.
            error = type(exc).__name__
        await self._record(item, error)

    async def _record(self, item: _Claimed, error: str | None) -> None:
        body = item.body
        now = utcnow()
        values: dict[str, Any]
        if error is None:
            result = "delivered"
            values = {
                "status": "delivered",
                "delivered_at": now,
                "previous": body["previous"],
                "last_error": None,
            }
        else:
            retry_at = now + self._backoff.delay(item.attempts)
            result = "parked" if retry_at > item.give_up_at else "failed"
            values = {"last_error": error[:_MAX_ERROR_LENGTH]}
            if result == "parked":
                values["status"] = "parked"
            else:
                values["next_attempt_at"] = retry_at
        async with self._sessionmaker() as session:
            # Only the claim that made this attempt writes its outcome (an operator's
            # replay in between starts a new count).
            await session.execute(
                update(_N)
                .where(_N.c.id == item.id, _N.c.attempts == item.attempts, _N.c.status == "pending")
                .values(values)
            )
            await session.commit()
        # `failed` counts every failed attempt, the one before parking included.
        NOTIFICATIONS.labels(result="delivered" if error is None else "failed").inc()
        if result == "parked":
            NOTIFICATIONS.labels(result="parked").inc()
        log.info(
            "notification_delivery",
            notification_id=item.id,
            customer_id=body["customer_id"],
            attempt=item.attempts,
            result=result,
            error=error,
        )
