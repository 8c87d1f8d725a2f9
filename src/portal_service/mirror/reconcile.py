"""Drift between the mirror and Stripe (`portal-service reconcile`, `sync --prune`).

Per kind, the mirror's rows are read first, then Stripe's objects (whole lists, or one
retrieve per sampled row), outside any transaction; each difference is one `Drift`:
`missing_here` (Stripe has it, the mirror does not), `missing_there` (a live row Stripe no
longer lists: a payment method detached or an object deleted while no webhook came), or
`differs` (the columns the mirror projects from Stripe's object are not what Stripe says);
the comparisons themselves are in mirror/drift.py. A fix applies Stripe's own answer
through the webhooks' upsert path (`apply_answer`), so the ordering rules hold: an event
newer than the read still wins. Nothing is removed on the strength of a list alone: a row
Stripe did not list is retrieved first, and only a 404 tombstones it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.errors import StripeUnavailable
from portal_service.gateway import Fetched, Gateway, StripeObjectMissing
from portal_service.mirror import tables
from portal_service.mirror.drift import (
    Drift,
    ItemState,
    KindReport,
    MirroredRow,
    Problem,
    differing_fields,
    entitlement_changes,
    stripe_items,
)
from portal_service.mirror.listing import (
    RATE_LIMIT_RETRIES,
    choose_kinds,
    live_customer_ids,
    pages,
    retry_after,
)
from portal_service.mirror.ordering import Outcome
from portal_service.mirror.projections import KINDS, kind_named
from portal_service.mirror.tables import table_of
from portal_service.mirror.ties import apply_answer, fetch_answer

RECONCILE_KINDS: tuple[str, ...] = tuple(
    entry.cli for entry in KINDS.values() if entry.cli is not None
)
"""The kinds reconcile compares, by their `--only` names, in the order it compares them."""
OnProgress = Callable[[str, int], None]

_ENTITLEMENTS = table_of(tables.Entitlement)
_ITEMS = table_of(tables.SubscriptionItem)


def parse_kinds(value: str | None) -> list[str]:
    """`--only a,b`: the kinds named, in reconcile order; every kind when None."""
    return choose_kinds(value, RECONCILE_KINDS)


class Reconciler:
    """Compares one mode and account of the mirror with Stripe and, asked to, repairs it."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: Gateway,
        *,
        livemode: bool,
        account: str = "",
        sample: int | None = None,
        rng: random.Random | None = None,
        on_progress: OnProgress | None = None,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._gateway = gateway
        self._livemode = livemode
        self._account = account
        self._sample = sample
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not secrets
        self._on_progress = on_progress
        self._rate_limit_retries = rate_limit_retries
        self._sleep = sleep
        self._items: dict[str, ItemState] = {}

    async def run(self, kinds: Sequence[str], *, fix: bool) -> dict[str, KindReport]:
        """Each kind in order, fixed before the next is compared (so the payment methods
        of a customer that was missing here are compared once it is mirrored)."""
        reports: dict[str, KindReport] = {}
        for kind in kinds:
            report = await self.compare(kind)
            if fix:
                await self.fix(report)
            reports[kind] = report
        return reports

    # -- reading: the mirror first, then Stripe ------------------------------------------

    async def _rows(self, kind: str, where: Iterable[Any] = ()) -> dict[str, MirroredRow]:
        table = kind_named(kind).table
        # Not `raw`: the columns are what is compared, and the copies would weigh most.
        columns = [column for column in table.c if column.name != "raw"]
        query = select(*columns).where(
            table.c.livemode == self._livemode, table.c.account == self._account, *where
        )
        async with self._sessionmaker() as session:
            result = await session.execute(query)
            return {
                row.id: MirroredRow(
                    values=dict(row._mapping), seen=(row.source_ts, row.source_event_id)
                )
                for row in result
            }

    async def _live_customers(self) -> list[str]:
        query = live_customer_ids(livemode=self._livemode, account=self._account)
        async with self._sessionmaker() as session:
            return list((await session.execute(query)).scalars().all())

    async def _listed(self, kind: str, *, customer: str | None = None) -> dict[str, Fetched]:
        list_kind = kind_named(kind).list_kind
        if list_kind is None:
            raise ValueError(f"reconcile cannot list {kind}")
        listed: dict[str, Fetched] = {}
        params = dict(kind_named(kind).list_params)
        async for page in pages(
            self._gateway,
            list_kind,
            params,
            customer=customer,
            account=self._account,
            retries=self._rate_limit_retries,
            sleep=self._sleep,
        ):
            for obj in page.objects:
                listed[obj["id"]] = Fetched(object=obj, fetched_at=page.fetched_at)
            self._progress(kind, len(page.objects))
        return listed

    async def _wait(self, exc: StripeUnavailable, attempt: int) -> int:
        """Wait out a 429 (its Retry-After) a few times; anything else is raised."""
        delay = retry_after(exc)
        if delay is None or attempt >= self._rate_limit_retries:
            raise exc
        await self._sleep(delay)
        return attempt + 1

    def _progress(self, kind: str, count: int) -> None:
        if self._on_progress is not None and count:
            self._on_progress(kind, count)

    def _sampled(self, ids: Sequence[str]) -> list[str]:
        if self._sample is None or self._sample >= len(ids):
            return list(ids)
        return self._rng.sample(list(ids), self._sample)

    async def _retrieve(self, kind: str, object_id: str) -> Fetched | None:
        attempt = 0
        mirror_kind = kind_named(kind).name
        while True:
            try:
                return await fetch_answer(
                    self._gateway, mirror_kind, object_id, account=self._account
                )
            except StripeUnavailable as exc:
                attempt = await self._wait(exc, attempt)

    async def compare(self, kind: str) -> KindReport:
        if kind == "entitlements":
            return await self._compare_entitlements()
        where: list[Any] = []
        if kind == "payment_methods":
            # Only attached methods: a detached one is mirrored with no customer.
            where.append(kind_named(kind).table.c.customer_id.is_not(None))
        rows = await self._rows(kind, where)
        if kind == "subscriptions":
            self._items = await self._mirrored_items()
        if self._sample is not None:
            return await self._compare_sample(kind, rows)
        if kind_named(kind).per_customer:
            listed: dict[str, Fetched] = {}
            customers = await self._live_customers()
            for customer_id in customers:
                try:
                    listed.update(await self._listed(kind, customer=customer_id))
                except StripeObjectMissing:
                    continue  # the customer is gone: its own drift, in `customers`
            # Rows of customers the mirror no longer holds live are not compared.
            alive = set(customers)
            rows = {i: r for i, r in rows.items() if r.values.get("customer_id") in alive}
        else:
            listed = await self._listed(kind)
        report = KindReport(checked=len(set(rows) | set(listed)))
        for object_id, fetched in listed.items():
            row = rows.get(object_id)
            if row is None:
                if fetched.object.get("deleted") is not True:
                    report.drift.append(Drift(kind, object_id, "missing_here", fetched=fetched))
                continue
            fields = self._differences(kind, fetched.object, row.values)
            if fields:
                report.drift.append(
                    Drift(kind, object_id, "differs", tuple(fields), fetched, row.seen)
                )
        for object_id, row in sorted(rows.items()):
            if object_id not in listed and row.live:
                report.drift.append(Drift(kind, object_id, "missing_there", seen=row.seen))
        return report

    def _differences(self, kind: str, obj: dict[str, Any], row: dict[str, Any]) -> list[str]:
        fields = differing_fields(kind_named(kind).name, obj, row)
        # A subscription's items are rows of their own: the price or quantity of one can
        # change with nothing on the subscription itself.
        if kind == "subscriptions" and stripe_items(obj) != self._items.get(row["id"], {}):
            fields.append("items")
        return fields

    async def _mirrored_items(self) -> dict[str, ItemState]:
        query = select(
            _ITEMS.c.subscription_id, _ITEMS.c.id, _ITEMS.c.price_id, _ITEMS.c.quantity
        ).where(_ITEMS.c.livemode == self._livemode, _ITEMS.c.account == self._account)
        out: dict[str, ItemState] = {}
        async with self._sessionmaker() as session:
            for row in await session.execute(query):
                out.setdefault(row.subscription_id, {})[row.id] = (row.price_id, row.quantity)
        return out

    async def _compare_sample(self, kind: str, rows: dict[str, MirroredRow]) -> KindReport:
        """A random sample of the mirror's live rows, each retrieved from Stripe: finds rows
        that differ or are gone there (what is missing here needs the whole lists)."""
        live = sorted(i for i, r in rows.items() if r.live)
        report = KindReport()
        for object_id in self._sampled(live):
            row = rows[object_id]
            fetched = await self._retrieve(kind, object_id)
            report.checked += 1
            self._progress(kind, 1)
            gone = fetched is None or fetched.object.get("deleted") is True
            if kind == "payment_methods" and fetched is not None:
                gone = gone or fetched.object.get("customer") is None
            if gone:
                report.drift.append(Drift(kind, object_id, "missing_there", seen=row.seen))
                continue
            assert fetched is not None  # noqa: S101 - `gone` covers None
            fields = self._differences(kind, fetched.object, row.values)
            if fields:
                report.drift.append(
                    Drift(kind, object_id, "differs", tuple(fields), fetched, row.seen)
                )
        return report

    async def _compare_entitlements(self) -> KindReport:
        """Per live customer: Stripe's active entitlements against the mirrored set."""
        customers = await self._live_customers()
        summaries = await self._rows("entitlements")
        query = select(
            _ENTITLEMENTS.c.customer_id, _ENTITLEMENTS.c.id, _ENTITLEMENTS.c.lookup_key
        ).where(_ENTITLEMENTS.c.livemode == self._livemode)
        query = query.where(_ENTITLEMENTS.c.account == self._account)
        mirrored: dict[str, dict[str, str | None]] = {}
        async with self._sessionmaker() as session:
            for row in await session.execute(query):
                mirrored.setdefault(row.customer_id, {})[row.id] = row.lookup_key
        report = KindReport()
        for customer_id in self._sampled(customers):
            fetched = await self._retrieve("entitlements", customer_id)
            report.checked += 1
            self._progress("entitlements", 1)
            if fetched is None:
                continue  # the customer is gone: its own drift, in `customers`
            stripe_set = {
                e["id"]: e.get("lookup_key") for e in fetched.object["entitlements"]["data"]
            }
            here = mirrored.get(customer_id, {})
            if stripe_set == here:
                continue
            fields = entitlement_changes(stripe_set, here)
            summary = summaries.get(customer_id)
            problem: Problem = "differs" if here or summary is not None else "missing_here"
            seen = summary.seen if summary is not None else None
            report.drift.append(
                Drift("entitlements", customer_id, problem, tuple(fields), fetched, seen)
            )
        return report

    # -- repairing: Stripe's answer through the upsert path -------------------------------

    async def fix(self, report: KindReport) -> None:
        """Apply Stripe's object for each drift (retrieved first when the comparison did not
        read it); `report.fixed` counts the outcomes (`applied`, or `stale`/`tie` when the
        mirror moved meanwhile and its newer state stays)."""
        for drift in report.drift:
            outcome = await self.repair(drift)
            report.fixed[outcome] += 1

    async def repair(self, drift: Drift) -> str:
        fetched = drift.fetched
        if fetched is None:
            fetched = await self._retrieve(drift.kind, drift.object_id)
        async with self._sessionmaker() as session:
            outcome = await apply_answer(
                session,
                kind_named(drift.kind).name,
                drift.object_id,
                fetched,
                account=self._account,
                livemode=self._livemode,
                supersedes=drift.seen,
            )
            await session.commit()
        return "tie" if outcome is Outcome.REFETCH else outcome.value

    async def prune(self, kind: str, listed: set[str]) -> KindReport:
        """`sync --prune`: the live rows of `kind` that a whole sync did not see listed,
        each retrieved and applied as Stripe answers (a 404 tombstones it)."""
        where: list[Any] = []
        table = kind_named(kind).table
        if kind == "payment_methods":
            where.append(table.c.customer_id.is_not(None))
        rows = await self._rows(kind, where)
        report = KindReport(checked=len(rows))
        for object_id, row in sorted(rows.items()):
            if row.live and object_id not in listed:
                report.drift.append(Drift(kind, object_id, "missing_there", seen=row.seen))
        await self.fix(report)
        return report


def drift_found(reports: dict[str, KindReport]) -> bool:
    return any(report.drift for report in reports.values())
