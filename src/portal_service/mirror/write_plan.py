"""The plan of one write: the rows a Stripe object becomes (its own and its children's),
and the children it no longer lists. It runs nothing: it names statements and values, and
whoever holds the transaction runs them (mirror/apply.py through the session,
mirror/intake_pg.py on the asyncpg connection), so both write the same rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, Table, bindparam, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from portal_service.db import utcnow
from portal_service.mirror import stripe_models as sm
from portal_service.mirror import tables
from portal_service.mirror.ordering import Incoming, RowState, Source
from portal_service.mirror.projections import (
    ENTITLEMENT_SUMMARY,
    KINDS,
    MirrorKind,
    item_columns,
)
from portal_service.mirror.tables import table_of


@functools.cache
def upsert_statement(
    dialect: str, table: Table, columns: tuple[str, ...], insert_only: frozenset[str]
) -> Executable:
    # INSERT .. ON CONFLICT DO UPDATE rather than read-then-write: writers that do not
    # take the object lock (POST /portal-sessions recording its session) cannot make
    # this fail with a duplicate key. One statement per table and column set, built once;
    # the values travel as parameters.
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(table)
    updates = {
        name: statement.excluded[name]
        for name in columns
        if name != "id" and name not in insert_only
    }
    return statement.on_conflict_do_update(index_elements=["id"], set_=updates)


def upsert_batches(
    rows: list[dict[str, Any]],
) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    """Rows grouped by column set, one statement execution each (executemany, which
    asyncpg pipelines into one round trip)."""
    # One row per id (the last one wins, as one statement per row did): a batch naming an
    # id twice is an error for ON CONFLICT DO UPDATE.
    unique = {values["id"]: values for values in rows}
    batches: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values in unique.values():
        batches.setdefault(tuple(sorted(values)), []).append(values)
    return list(batches.items())


def _common(
    object_id: str, source: Source, *, deleted: bool, raw: dict[str, Any] | None
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": object_id,
        "livemode": source.livemode,
        "account": source.account,
        "source_ts": source.ts,
        "source_event_id": source.event_id,
        "deleted": deleted,
        "updated_at": utcnow(),
    }
    if raw is not None:
        values["raw"] = raw
    return values


@dataclass(frozen=True, slots=True)
class Upsert:
    table: Table
    rows: list[dict[str, Any]]
    insert_only: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LeftOut:
    """Children the payload no longer lists: `statement` (ITEMS_LEFT_OUT or
    ENTITLEMENTS_LEFT_OUT) with its parameters."""

    statement: Executable
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WritePlan:
    """The statements of one applied object, in order: whoever runs them (the session, or
    the PostgreSQL intake's asyncpg path) writes the same rows."""

    upserts: list[Upsert]
    left_out: LeftOut | None = None


def plan_write(
    kind: MirrorKind,
    object_id: str,
    incoming: Incoming,
    source: Source,
    *,
    row: RowState | None,
) -> WritePlan:
    entry = KINDS[kind]
    # The tombstone flag is sticky: nothing brings a deleted object back.
    deleted = incoming.deleted or (row is not None and row.deleted)
    if incoming.stub:
        values = _common(object_id, source, deleted=True, raw=None)
    else:
        values = _common(object_id, source, deleted=deleted, raw=incoming.raw)
        values.update(entry.columns(incoming.model, incoming.action))
        created = getattr(incoming.model, "created", None)
        if created is not None:
            values["stripe_created"] = created
    if kind == "customer" and deleted:
        # customer.deleted unlinks the app user (they get a new customer next time).
        values["app_user_id"] = None
    parent = Upsert(entry.table, [values], insert_only=entry.insert_only)
    if incoming.stub:
        return WritePlan([parent])
    if kind == "subscription":
        previous = _listed_children(row.raw, "items") if row is not None else None
        items, left_out = _replace_items(incoming.model, incoming.raw, source, previous=previous)
        return WritePlan([parent, items], left_out)
    if kind == ENTITLEMENT_SUMMARY:
        entitlements, left_out = _replace_entitlements(incoming.model, incoming.raw, source)
        return WritePlan([parent, entitlements], left_out)
    return WritePlan([parent])


def _children_raw(raw: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    container = raw.get(key)
    data = container.get("data") if isinstance(container, dict) else None
    out: dict[str, dict[str, Any]] = {}
    for child in data if isinstance(data, list) else []:
        if isinstance(child, dict) and isinstance(child.get("id"), str):
            out[child["id"]] = child
    return out


def _listed_children(raw: Any, key: str) -> set[str] | None:
    """The ids of a stored object's complete child list, None unless it holds one (a raw
    written some other way, or a list Stripe truncated)."""
    container = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(container, dict) or container.get("has_more") is not False:
        return None
    data = container.get("data")
    if not isinstance(data, list):
        return None
    ids: set[str] = set()
    for child in data:
        child_id = child.get("id") if isinstance(child, dict) else None
        if not isinstance(child_id, str):
            return None
        ids.add(child_id)
    return ids


ITEMS = table_of(tables.SubscriptionItem)
ITEMS_LEFT_OUT = delete(ITEMS).where(
    ITEMS.c.subscription_id == bindparam("parent"),
    ITEMS.c.id.not_in(bindparam("keep", expanding=True)),
)
ENTITLEMENTS = table_of(tables.Entitlement)
ENTITLEMENTS_LEFT_OUT = delete(ENTITLEMENTS).where(
    ENTITLEMENTS.c.customer_id == bindparam("parent"),
    ENTITLEMENTS.c.account == bindparam("account"),
    ENTITLEMENTS.c.id.not_in(bindparam("keep", expanding=True)),
)
"""Children a payload no longer lists: deleted when the payload holds the whole set."""


def _replace_items(
    subscription: sm.Subscription,
    raw: dict[str, Any],
    source: Source,
    *,
    previous: set[str] | None,
) -> tuple[Upsert, LeftOut | None]:
    """Upsert the payload's items and delete those it no longer lists. `previous`: the
    item ids of the complete list last applied (the row's `raw`), which are the items
    this subscription has in the mirror (only this function writes them)."""
    items_raw = _children_raw(raw, "items")
    rows: list[dict[str, Any]] = []
    for item in subscription.items.data:
        values = _common(item.id, source, deleted=False, raw=items_raw.get(item.id))
        values.update(item_columns(item, subscription))
        if item.created is not None:
            values["stripe_created"] = item.created
        rows.append(values)
    upsert = Upsert(ITEMS, rows)
    # The payload's item list is the whole set unless Stripe truncated it (has_more):
    # then removing what is missing would drop items that still exist.
    if not subscription.items.has_more:
        keep = [item.id for item in subscription.items.data]
        if previous is not None and previous <= set(keep):
            # Nothing the mirror holds was left out: the DELETE would find nothing (one
            # round trip less on most updates).
            return upsert, None
        return upsert, LeftOut(ITEMS_LEFT_OUT, {"parent": subscription.id, "keep": keep})
    return upsert, None


def _replace_entitlements(
    summary: sm.ActiveEntitlementSummary,
    raw: dict[str, Any],
    source: Source,
) -> tuple[Upsert, LeftOut | None]:
    entitlements_raw = _children_raw(raw, "entitlements")
    rows: list[dict[str, Any]] = []
    for entitlement in summary.entitlements.data:
        values = _common(
            entitlement.id, source, deleted=False, raw=entitlements_raw.get(entitlement.id)
        )
        values.update(
            customer_id=summary.customer,
            feature_id=entitlement.feature,
            lookup_key=entitlement.lookup_key,
        )
        rows.append(values)
    upsert = Upsert(ENTITLEMENTS, rows)
    if not summary.entitlements.has_more:
        keep = [entitlement.id for entitlement in summary.entitlements.data]
        params = {"parent": summary.customer, "account": source.account, "keep": keep}
        return upsert, LeftOut(ENTITLEMENTS_LEFT_OUT, params)
    return upsert, None
