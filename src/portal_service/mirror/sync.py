"""Backfill and reconciliation (README.md, "Backfill and reconciliation"): page through Stripe and apply what it
holds through the webhooks' upsert path (`apply_fetched`), so the ordering rules hold.

Stripe is always asked outside any transaction: a page is fetched, then applied in one
short transaction, which also moves the kind's `sync_state` cursor for `--resume`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.db import utcnow
from portal_service.errors import CustomerNotFound, DomainError
from portal_service.gateway import Gateway, StripeObjectMissing
from portal_service.gateway.base import ListKind, ListPage
from portal_service.mirror.apply import apply_fetched, apply_missing, watermark
from portal_service.mirror.events import received_from
from portal_service.mirror.intake import EventProcessor
from portal_service.mirror.linking import claim_app_user
from portal_service.mirror.listing import (
    RATE_LIMIT_RETRIES,
    Sleep,
    choose_kinds,
    live_customer_ids,
    pages,
)
from portal_service.mirror.ordering import Outcome
from portal_service.mirror.projections import ENTITLEMENT_SUMMARY, KINDS, kind_named
from portal_service.mirror.reconcile import Reconciler
from portal_service.mirror.sync_state import mark_completed, save_cursor, start_kinds, state_key
from portal_service.mirror.tables import Customer, StripeEvent, table_of
from portal_service.mirror.ties import Tie, fetch_answer, settle_tie

SYNC_KINDS: tuple[str, ...] = tuple(
    entry.cli for entry in KINDS.values() if entry.cli is not None and entry.list_kind is not None
)
"""The kinds sync lists, by their `--only` names, in the order it syncs them."""

# Customers handed to the per-customer lists at once; the cursor moves when all are done.
CUSTOMER_BATCH = 20

OnPage = Callable[[str, int], None]


def parse_only(value: str | None) -> list[str]:
    """`--only a,b`: the kinds named, in sync order; every kind when None. ValueError names
    what is unknown."""
    return choose_kinds(value, SYNC_KINDS)


def parse_since(value: str) -> int:
    """`--since`: unix seconds, or an ISO date or date-time (UTC when it has no offset)."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO date or unix time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


_CUSTOMERS = table_of(Customer)
_EVENTS = table_of(StripeEvent)


class Syncer:
    """Fetches from Stripe through the gateway and applies into the mirror (platform account
    `account`, the key's mode `livemode`). Counts every object it applies in `results`,
    keyed (kind, outcome)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: Gateway,
        *,
        livemode: bool,
        account: str = "",
        concurrency: int = 4,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
        sleep: Sleep = asyncio.sleep,
        on_page: OnPage | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._gateway = gateway
        self._livemode = livemode
        self._account = account
        self._semaphore = asyncio.Semaphore(concurrency)
        self._rate_limit_retries = rate_limit_retries
        self._sleep = sleep
        self._on_page = on_page
        self.results: Counter[tuple[str, str]] = Counter()
        # Every id Stripe listed per kind in this run: what `sync --prune` keeps.
        self.listed: dict[str, set[str]] = {kind: set() for kind in SYNC_KINDS}

    def _state_key(self, kind: str) -> str:
        return state_key(kind, self._account)

    # -- Stripe, outside any transaction -------------------------------------------------

    def _pages(
        self, kind: str, params: dict[str, Any], *, customer: str | None = None
    ) -> AsyncIterator[ListPage]:
        return pages(
            self._gateway,
            _list_kind(kind),
            params,
            customer=customer,
            account=self._account,
            retries=self._rate_limit_retries,
            sleep=self._sleep,
        )

    # -- the mirror, one short transaction per page ----------------------------------------

    async def _apply_page(
        self, kind: str, page: ListPage, *, cursor_of: str | None = None
    ) -> list[str]:
        """Apply one page; returns the ids left to settle (a same-second event reached them)."""
        mirror_kind = kind_named(kind).name
        ties: list[str] = []
        self.listed[kind].update(obj["id"] for obj in page.objects)
        async with self._sessionmaker() as session:
            for obj in page.objects:
                outcome = await apply_fetched(
                    session,
                    mirror_kind,
                    obj,
                    page.fetched_at,
                    account=self._account,
                    livemode=self._livemode,
                )
                if outcome is Outcome.REFETCH:
                    ties.append(obj["id"])
                else:
                    self.results[kind, outcome.value] += 1
                claims = kind == "customers" and outcome in (Outcome.APPLIED, Outcome.NOOP)
                if claims and await claim_app_user(session, obj):
                    self.results["customers", "linked"] += 1
            if cursor_of is not None and page.objects:
                await save_cursor(session, self._state_key(cursor_of), page.objects[-1]["id"])
            await session.commit()
        if self._on_page is not None:
            self._on_page(kind, len(page.objects))
        return ties

    async def _settle(self, kind: str, object_ids: Sequence[str]) -> None:
        """A page tied with an event of its own second: ask Stripe once more for each object,
        then apply the answer if the row has not moved since (as intake does for ties)."""
        mirror_kind = kind_named(kind).name
        for object_id in object_ids:
            async with self._sessionmaker() as session:
                seen = await watermark(session, mirror_kind, object_id)
            tie = Tie(mirror_kind, object_id, self._account, self._livemode, seen)
            answer = await fetch_answer(
                self._gateway, mirror_kind, object_id, account=self._account
            )
            async with self._sessionmaker() as session:
                outcome, _ = await settle_tie(session, tie, answer)
                await session.commit()
            # Still tied: the event's state stays; its own successor event settles it.
            self.results[kind, "tie" if outcome is Outcome.REFETCH else outcome.value] += 1

    # -- whole kinds ---------------------------------------------------------------------

    async def sync_kind(self, kind: str, *, since: int | None, cursor: str | None) -> None:
        """Backfill one kind, resuming after `cursor`; marks the kind complete at the end."""
        entry = kind_named(kind)
        if entry.per_customer:
            await self._sync_per_customer(kind, cursor=cursor)
        else:
            params: dict[str, Any] = dict(entry.list_params)
            if since is not None and entry.filters_by_created:
                params["created"] = {"gte": since}
            if cursor:
                params["starting_after"] = cursor
            async for page in self._pages(kind, params):
                ties = await self._apply_page(kind, page, cursor_of=kind)
                await self._settle(kind, ties)
        async with self._sessionmaker() as session:
            await mark_completed(session, self._state_key(kind))
            await session.commit()

    async def _sync_per_customer(self, kind: str, *, cursor: str | None) -> None:
        # Over the mirrored live customers in id order, a batch at a time, each batch's
        # customers concurrently (bounded by the semaphore). The cursor is the last customer
        # of a finished batch, so a resume never skips one whose list was cut short.
        while True:
            async with self._sessionmaker() as session:
                query = live_customer_ids(livemode=self._livemode, account=self._account).limit(
                    CUSTOMER_BATCH
                )
                if cursor:
                    query = query.where(_CUSTOMERS.c.id > cursor)
                batch = list((await session.execute(query)).scalars().all())
            if not batch:
                return
            # Every task of the batch finishes (no orphan left running) before a failure
            # is raised; the cursor then stays before this batch.
            outcomes = await asyncio.gather(
                *(self._sync_customer_list(kind, c) for c in batch), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            cursor = batch[-1]
            async with self._sessionmaker() as session:
                await save_cursor(session, self._state_key(kind), cursor)
                await session.commit()

    async def _sync_customer_list(self, kind: str, customer_id: str) -> int:
        async with self._semaphore:
            count = 0
            try:
                async for page in self._pages(kind, {}, customer=customer_id):
                    ties = await self._apply_page(kind, page)
                    await self._settle(kind, ties)
                    count += len(page.objects)
            except StripeObjectMissing:
                # Deleted in Stripe since it was mirrored: its customer.deleted event (or
                # the next customers sync) tombstones it; nothing of it to list.
                self.results[kind, "customer_missing"] += 1
            return count

    # -- one customer: POST /admin/customers/{id}/resync -----------------------------------

    async def resync_customer(self, customer_id: str) -> dict[str, int]:
        """Re-fetch one customer and everything of it the mirror holds; the number of
        objects Stripe returned per kind. CustomerNotFound when Stripe has no such customer
        (a mirrored row is tombstoned)."""
        try:
            fetched = await self._gateway.retrieve("customer", customer_id, account=self._account)
        except StripeObjectMissing:
            await self._tombstone_customer(customer_id)
            raise CustomerNotFound("Stripe has no such customer.") from None
        page = ListPage(objects=[fetched.object], fetched_at=fetched.fetched_at)
        await self._settle("customers", await self._apply_page("customers", page))
        if fetched.object.get("deleted") is True:
            raise CustomerNotFound("The customer was deleted in Stripe.")
        counts = {"customers": 1}
        lists: list[tuple[str, dict[str, Any], str | None]] = [
            ("subscriptions", {"status": "all", "customer": customer_id}, None),
            ("payment_methods", {}, customer_id),
            ("invoices", {"customer": customer_id}, None),
            ("tax_ids", {}, customer_id),
        ]
        for kind, params, parent in lists:
            counts[kind] = 0
            async for listed in self._pages(kind, params, customer=parent):
                await self._settle(kind, await self._apply_page(kind, listed))
                counts[kind] += len(listed.objects)
        summary = await self._gateway.list_active_entitlements(customer_id, account=self._account)
        async with self._sessionmaker() as session:
            outcome = await apply_fetched(
                session,
                ENTITLEMENT_SUMMARY,
                summary.object,
                summary.fetched_at,
                account=self._account,
                livemode=self._livemode,
            )
            await session.commit()
        self.results["entitlements", outcome.value] += 1
        counts["entitlements"] = len(summary.object["entitlements"]["data"])
        return counts

    async def _tombstone_customer(self, customer_id: str) -> None:
        async with self._sessionmaker() as session:
            if await watermark(session, "customer", customer_id) is None:
                return  # never mirrored: nothing to mark
            await apply_missing(
                session,
                "customer",
                customer_id,
                utcnow(),
                account=self._account,
                livemode=self._livemode,
            )
            await session.commit()

    # -- the Events API: events missed while the service was away -------------------------

    async def catch_up_events(self, processor: EventProcessor) -> Counter[str]:
        """Record and apply, oldest first and exactly as deliveries, the events Stripe
        created since the newest one recorded (Stripe keeps 30 days). Events already
        recorded are skipped. Returns counts by webhook status (`failed`: recorded, not
        applied: `replay` retries it)."""
        async with self._sessionmaker() as session:
            newest = (
                await session.execute(
                    select(func.max(_EVENTS.c.created)).where(_EVENTS.c.account == self._account)
                )
            ).scalar_one_or_none()
        params: dict[str, Any] = {}
        if newest is not None:
            # The same second too: an event from it may not have been delivered yet.
            params["created"] = {"gte": int(newest.timestamp())}
        events: list[dict[str, Any]] = []
        async for page in pages(
            self._gateway,
            "event",
            params,
            account=self._account,
            retries=self._rate_limit_retries,
            sleep=self._sleep,
        ):
            events.extend(page.objects)
        recorded = await self._recorded([event["id"] for event in events])
        results: Counter[str] = Counter()
        # Stripe lists newest first: reversed, the oldest comes first, ties in creation order.
        for event in reversed(events):
            if event["id"] in recorded:
                results["skipped"] += 1
                continue
            try:
                status = await processor.receive(received_from(event))
            except DomainError:
                results["failed"] += 1
                continue
            results[status] += 1
            if self._on_page is not None:
                self._on_page("events", 1)
        return results

    async def _recorded(self, event_ids: list[str]) -> set[str]:
        found: set[str] = set()
        async with self._sessionmaker() as session:
            for start in range(0, len(event_ids), 500):
                chunk = event_ids[start : start + 500]
                query = select(_EVENTS.c.id).where(_EVENTS.c.id.in_(chunk))
                found.update((await session.execute(query)).scalars().all())
        return found


async def run_sync(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: Gateway,
    *,
    livemode: bool,
    kinds: Sequence[str],
    since: int | None = None,
    resume: bool = False,
    concurrency: int = 4,
    sleep: Sleep = asyncio.sleep,
    on_page: OnPage | None = None,
    account: str = "",
    prune: bool = False,
) -> Counter[tuple[str, str]]:
    """`portal-service sync` without its command line: every kind of `kinds` in order.
    `account`: a Connect account instead of the platform. `prune`: after each kind, the
    live rows Stripe did not list are retrieved and applied as Stripe answers (a whole
    listing is needed: not with `since` or `resume`)."""
    if prune and (since is not None or resume):
        raise ValueError("prune needs whole lists: not with since or resume")
    syncer = Syncer(
        sessionmaker,
        gateway,
        livemode=livemode,
        account=account,
        concurrency=concurrency,
        sleep=sleep,
        on_page=on_page,
    )
    todo = await start_kinds(sessionmaker, kinds, resume=resume, account=account)
    for kind, cursor in todo.items():
        await syncer.sync_kind(kind, since=since, cursor=cursor)
        if prune:
            await _prune(syncer, sessionmaker, gateway, kind, livemode=livemode, account=account)
    return syncer.results


async def _prune(
    syncer: Syncer,
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: Gateway,
    kind: str,
    *,
    livemode: bool,
    account: str,
) -> None:
    reconciler = Reconciler(sessionmaker, gateway, livemode=livemode, account=account)
    report = await reconciler.prune(kind, syncer.listed[kind])
    for outcome, count in report.fixed.items():
        syncer.results[kind, f"pruned {outcome}"] += count


def _list_kind(kind: str) -> ListKind:
    list_kind = kind_named(kind).list_kind
    if list_kind is None:
        raise ValueError(f"sync cannot list {kind}")
    return list_kind
