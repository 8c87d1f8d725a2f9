"""The mirror's writes: a Stripe object into its row (and its children's rows), behind the
ordering watermark (mirror/ordering.py), as planned by mirror/write_plan.py.

Every write goes through `apply_object` with the object's lock held (mirror.locks): read the
row's watermark `(source_ts, source_event_id)`, decide, then upsert the row and replace its
children. Webhook events and fetches (sync, re-fetched ties, the portal's "fetch once and
apply") share this path, so the ordering rules hold whoever writes.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal_service.mirror.locks import lock_object
from portal_service.mirror.observers import observer_of
from portal_service.mirror.ordering import (
    Outcome,
    RowState,
    Source,
    Watermark,
    decide,
    floor_second,
    parse_incoming,
)
from portal_service.mirror.projections import (
    ENTITLEMENT_SUMMARY,
    KINDS,
    Action,
    MirrorKind,
    object_id_of,
)
from portal_service.mirror.stripe_models import redact_session_urls
from portal_service.mirror.write_plan import (
    WritePlan,
    plan_write,
    upsert_batches,
    upsert_statement,
)


@functools.cache
def row_query(kind: MirrorKind) -> Select[Any]:
    # Built once per kind: constructing and cache-keying a statement costs more CPU than
    # the round trip it makes (bench/README.md).
    table = KINDS[kind].table
    columns = [table.c.source_ts, table.c.source_event_id, table.c.deleted, table.c.raw]
    if "status" in table.c:
        columns.append(table.c.status)
    return select(*columns).where(table.c.id == bindparam("object_id"))


async def _current_row(session: AsyncSession, kind: MirrorKind, object_id: str) -> RowState | None:
    result = await session.execute(row_query(kind), {"object_id": object_id})
    row = result.one_or_none()
    if row is None:
        return None
    return RowState(
        source_ts=row.source_ts,
        source_event_id=row.source_event_id,
        deleted=row.deleted,
        raw=row.raw,
        status=row._mapping.get("status"),
    )


async def watermark(session: AsyncSession, kind: MirrorKind, object_id: str) -> Watermark | None:
    """The row's `(source_ts, source_event_id)`, None when there is no row."""
    row = await _current_row(session, kind, object_id)
    return None if row is None else (row.source_ts, row.source_event_id)


async def _upsert(
    session: AsyncSession,
    table: Table,
    rows: list[dict[str, Any]],
    *,
    insert_only: frozenset[str] = frozenset(),
) -> None:
    dialect = session.get_bind().dialect.name
    for columns, batch in upsert_batches(rows):
        statement = upsert_statement(dialect, table, columns, insert_only)
        await session.execute(statement, batch[0] if len(batch) == 1 else batch)


async def _write(session: AsyncSession, plan: WritePlan) -> None:
    for upsert in plan.upserts:
        await _upsert(session, upsert.table, upsert.rows, insert_only=upsert.insert_only)
    if plan.left_out is not None:
        await session.execute(plan.left_out.statement, plan.left_out.params)


async def apply_object(
    session: AsyncSession,
    kind: MirrorKind,
    obj: dict[str, Any],
    *,
    source: Source,
    action: Action = "upsert",
) -> Outcome:
    """Apply one Stripe object if the watermark allows. `obj` is as stored: portal session
    URLs already removed (`redact_session_urls`; an event's payload was redacted whole when
    it was received). The caller holds the object's lock
    (`lock_object(session, account=..., kind=kind, object_id=object_id_of(kind, obj))`) and
    owns the transaction. REFETCH writes nothing: ask Stripe, then `apply_fetched`."""
    object_id = object_id_of(kind, obj)
    incoming = parse_incoming(kind, obj, action)
    row = await _current_row(session, kind, object_id)
    outcome = decide(kind, row, incoming, source)
    if outcome is Outcome.APPLIED:
        # Issue 12: the outbox of access.changed, when one is installed (observers.py).
        observer = observer_of(session)
        if observer is not None:
            await observer.before_write(
                session,
                kind=kind,
                object_id=object_id,
                account=source.account,
                livemode=source.livemode,
                before=row.raw if row is not None and isinstance(row.raw, dict) else None,
                after=incoming.raw,
            )
        await _write(session, plan_write(kind, object_id, incoming, source, row=row))
    return outcome


async def apply_fetched(
    session: AsyncSession,
    kind: MirrorKind,
    obj: dict[str, Any],
    fetched_at: datetime,
    *,
    account: str = "",
    livemode: bool = False,
    supersedes: Watermark | None = None,
) -> Outcome:
    """Apply an object read from Stripe (a re-fetch, sync, or the portal's fetch-once),
    stamped with Stripe's `Date` of that read floored to the second, so an older event
    arriving later cannot roll it back and one from the same second ties with it.

    `livemode` is the mode of the key that read it, used when the object does not say
    (a deleted customer's stub, an entitlement listing shaped into a summary).
    `supersedes`: the row's `watermark()` read before the fetch was made, if known.
    Takes the object's lock itself and writes in the caller's transaction (no commit).
    Call it after the Stripe request has returned, never around it. Returns APPLIED,
    NOOP, STALE (the mirror already holds a newer or final state) or REFETCH (an event
    from the fetch's own second reached the row meanwhile, and may be newer: nothing
    written; fetch again, passing the row's watermark now, to settle it).
    """
    object_id = object_id_of(kind, obj)
    await lock_object(session, account=account, kind=kind, object_id=object_id)
    stated = obj.get("livemode")
    source = Source(
        ts=floor_second(fetched_at),
        event_id=None,
        livemode=stated if isinstance(stated, bool) else livemode,
        account=account,
        supersedes=supersedes,
    )
    return await apply_object(session, kind, redact_session_urls(obj), source=source)


async def apply_missing(
    session: AsyncSession,
    kind: MirrorKind,
    object_id: str,
    fetched_at: datetime,
    *,
    account: str = "",
    livemode: bool = False,
    supersedes: Watermark | None = None,
) -> Outcome:
    """Stripe answered 404 for the object: tombstone its row (taking the lock). Outcomes
    as for `apply_fetched`."""
    await lock_object(session, account=account, kind=kind, object_id=object_id)
    source = Source(
        ts=floor_second(fetched_at),
        event_id=None,
        livemode=livemode,
        account=account,
        supersedes=supersedes,
    )
    stub = {"customer": object_id} if kind == ENTITLEMENT_SUMMARY else {"id": object_id}
    if kind == ENTITLEMENT_SUMMARY:
        # No entitlements left is an empty set, not a deletion.
        empty = {**stub, "entitlements": {"data": [], "has_more": False}}
        return await apply_object(session, kind, empty, source=source)
    return await apply_object(
        session, kind, {**stub, "deleted": True}, source=source, action="delete"
    )
