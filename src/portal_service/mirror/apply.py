"""Stripe objects into mirror rows, behind the ordering watermark (DESIGN.md section 4 items 4-5).

Every write goes through `apply_object` with the object's lock held (mirror.locks): read the
row's watermark `(source_ts, source_event_id)`, decide, then upsert the row and replace its
children. Webhook events and fetches (sync, re-fetched ties, the portal's "fetch once and
apply") share this path, so the ordering rules hold whoever writes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, cast

from pydantic import BaseModel
from sqlalchemy import Executable, Select, Table, bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from portal_service.db import utcnow
from portal_service.gateway import Fetched
from portal_service.mirror import stripe_models as sm
from portal_service.mirror import tables
from portal_service.mirror.locks import lock_object
from portal_service.mirror.observers import observer_of
from portal_service.mirror.stripe_models import redact_session_urls

MirrorKind = Literal[
    "customer",
    "subscription",
    "payment_method",
    "invoice",
    "tax_id",
    "billing_portal.configuration",
    "billing_portal.session",
    "entitlements.active_entitlement_summary",
]
ENTITLEMENT_SUMMARY: MirrorKind = "entitlements.active_entitlement_summary"

# upsert: the object as sent; delete: a *.deleted event (a tombstone); detach: a
# payment_method.detached event (the method stays, its customer link goes).
Action = Literal["upsert", "delete", "detach"]

TERMINAL_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})
# Invoice states only move forward: draft -> open -> (uncollectible ->) paid | void.
# An uncollectible invoice can still be paid or voided, so it ranks below both.
_INVOICE_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}
_STUB_KEYS = frozenset({"id", "object", "deleted"})


class Outcome(StrEnum):
    APPLIED = "applied"  # written; the watermark moved
    NOOP = "noop"  # already there: the same event again, or an identical object
    STALE = "stale"  # older than the row, or a non-final state after a final one
    REFETCH = "refetch"  # a same-second tie only Stripe can settle: nothing written


Watermark = tuple[datetime | None, str | None]
"""A row's `(source_ts, source_event_id)`."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a state comes from: an event (`created`, its id) or a fetch (Stripe's Date, no id)."""

    ts: datetime
    event_id: str | None
    livemode: bool
    account: str = ""
    # No Stripe to ask (offline mode, or an event of the other mode, which this key cannot
    # read): a tie that the payloads cannot settle applies the event (a tombstone still
    # wins, DESIGN.md section 4 item 4).
    settle_ties_locally: bool = False
    # For a fetch: the row's watermark read before the fetch was made. A row still at it
    # has seen nothing newer than Stripe's answer, even an event from the same second.
    supersedes: Watermark | None = None

    @property
    def fetched(self) -> bool:
        return self.event_id is None


def floor_second(moment: datetime) -> datetime:
    """Stripe's clocks have one-second resolution: a fetch stamped finer would beat an
    event of the same second instead of tying with it."""
    return moment.replace(microsecond=0)


def table_of(model: type[SQLModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]  # set by SQLModel(table=True)


def _id_of(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def object_id_of(kind: MirrorKind, obj: Mapping[str, Any]) -> str:
    """The mirror id of an object: its Stripe id, or the customer for an entitlement summary."""
    object_id = _id_of(obj.get("customer") if kind == ENTITLEMENT_SUMMARY else obj.get("id"))
    if object_id is None:
        raise ValueError(f"{kind} object has no id")
    return object_id


@dataclass(frozen=True, slots=True)
class Incoming:
    model: Any
    action: Action
    raw: dict[str, Any]
    status: str | None
    deleted: bool
    # A deleted customer as Stripe returns it, `{"id", "object", "deleted": true}`: it
    # carries nothing to project, so only the tombstone columns are written.
    stub: bool


@dataclass(frozen=True, slots=True)
class _Projection:
    model: type[tables.MirrorColumns]
    parse: Callable[[dict[str, Any]], BaseModel]
    columns: Callable[[Any, Action], dict[str, Any]]
    status: Callable[[Any], str | None] = lambda _m: None
    # Whether Stripe can be asked to settle a tie (sessions cannot be retrieved).
    refetchable: bool = True
    # Columns written on insert only: other writers own them afterwards.
    insert_only: frozenset[str] = field(default_factory=frozenset)

    @property
    def table(self) -> Table:
        return table_of(self.model)


def _customer_columns(c: sm.Customer, _action: Action) -> dict[str, Any]:
    # Never app_user_id: only auto-creation, PUT /users/{id}/customer and sync set it.
    return {
        "email": c.email,
        "name": c.name,
        "default_payment_method": c.default_payment_method,
        "address": c.address,
        "tax_exempt": c.tax_exempt,
        "preferred_locales": list(c.preferred_locales),
    }


def _subscription_columns(s: sm.Subscription, _action: Action) -> dict[str, Any]:
    pause = s.pause_collection
    return {
        "customer_id": s.customer,
        "status": s.status,
        "cancel_at_period_end": s.cancel_at_period_end,
        "cancel_at": s.cancel_at,
        "canceled_at": s.canceled_at,
        "ended_at": s.ended_at,
        # Its own period in payloads before 2025-03-31.basil, the earliest item's after.
        "current_period_start": s.period_start,
        "current_period_end": s.period_end,
        "trial_start": s.trial_start,
        "trial_end": s.trial_end,
        "pause_collection_behavior": pause.behavior if pause is not None else None,
        "pause_resumes_at": pause.resumes_at if pause is not None else None,
        "collection_method": s.collection_method,
        "schedule_id": s.schedule,
        "default_payment_method": s.default_payment_method,
        "latest_invoice_id": s.latest_invoice,
    }


def _payment_method_columns(p: sm.PaymentMethod, action: Action) -> dict[str, Any]:
    card = p.card
    return {
        # A detach event may still name the customer in older payloads: the event decides.
        "customer_id": None if action == "detach" else p.customer,
        "type": p.type,
        "card_brand": card.brand if card is not None else None,
        "card_last4": card.last4 if card is not None else None,
        "card_exp_month": card.exp_month if card is not None else None,
        "card_exp_year": card.exp_year if card is not None else None,
    }


def _copied(**columns: str) -> Callable[[Any, Action], dict[str, Any]]:
    """Columns that copy one model attribute each, named `column=attribute`."""

    def copy(model: Any, _action: Action) -> dict[str, Any]:
        return {column: getattr(model, attribute) for column, attribute in columns.items()}

    return copy


_invoice_columns = _copied(
    customer_id="customer",
    subscription_id="subscription_id",
    status="status",
    currency="currency",
    amount_due="amount_due",
    amount_paid="amount_paid",
    hosted_invoice_url="hosted_invoice_url",
    paid_at="paid_at",
)
_tax_id_columns = _copied(
    customer_id="customer",
    type="type",
    value="value",
    verification_status="verification_status",
)
_configuration_columns = _copied(
    is_default="is_default",
    active="active",
    name="name",
    default_return_url="default_return_url",
    features="features",
    business_profile="business_profile",
    metadata="metadata",
)


def _session_columns(s: sm.PortalSession, _action: Action) -> dict[str, Any]:
    # Never the url (the model has none), nor app_user_id / caller / idempotency columns,
    # which POST /portal-sessions writes and the event does not know.
    columns: dict[str, Any] = {
        "customer_id": s.customer,
        "configuration_id": s.configuration,
        "locale": s.locale,
        "flow_type": s.flow_type,
        "return_url": s.return_url,
    }
    if s.created is not None:
        columns["created"] = s.created
    return columns


PROJECTIONS: dict[MirrorKind, _Projection] = {
    "customer": _Projection(tables.Customer, sm.Customer.model_validate, _customer_columns),
    "subscription": _Projection(
        tables.Subscription,
        sm.Subscription.model_validate,
        _subscription_columns,
        status=lambda s: s.status,
    ),
    "payment_method": _Projection(
        tables.PaymentMethod, sm.PaymentMethod.model_validate, _payment_method_columns
    ),
    "invoice": _Projection(
        tables.Invoice, sm.Invoice.model_validate, _invoice_columns, status=lambda i: i.status
    ),
    "tax_id": _Projection(tables.TaxId, sm.TaxId.model_validate, _tax_id_columns),
    "billing_portal.configuration": _Projection(
        tables.PortalConfiguration,
        sm.PortalConfiguration.model_validate,
        _configuration_columns,
    ),
    "billing_portal.session": _Projection(
        tables.PortalSession,
        sm.PortalSession.model_validate,
        _session_columns,
        refetchable=False,
        insert_only=frozenset({"created"}),
    ),
    ENTITLEMENT_SUMMARY: _Projection(
        tables.EntitlementSummary,
        sm.ActiveEntitlementSummary.model_validate,
        _copied(),
    ),
}


@dataclass(frozen=True, slots=True)
class RowState:
    source_ts: datetime | None
    source_event_id: str | None
    deleted: bool
    raw: Any
    status: str | None


def _is_final(kind: MirrorKind, status: str | None, deleted: bool) -> bool:
    if deleted:
        return True
    return kind == "subscription" and status in TERMINAL_SUBSCRIPTION_STATUSES


def _rank(kind: MirrorKind, status: str | None, deleted: bool) -> int | None:
    """Position on a path that only moves forward; None when the state says nothing."""
    if kind == "invoice":
        return 4 if deleted else _INVOICE_RANK.get(status or "")
    return 1 if _is_final(kind, status, deleted) else 0


def _decide(kind: MirrorKind, row: RowState | None, incoming: Incoming, source: Source) -> Outcome:
    if row is None:
        return Outcome.APPLIED
    row_final = _is_final(kind, row.status, row.deleted)
    # Deletion is terminal: whatever its timestamp, a live state never replaces it.
    if row_final and not _is_final(kind, incoming.status, incoming.deleted):
        return Outcome.STALE
    if row.source_ts is None or source.ts > row.source_ts:
        return Outcome.APPLIED
    if source.ts < row.source_ts:
        return Outcome.STALE
    if source.event_id is not None and source.event_id == row.source_event_id:
        return Outcome.NOOP
    # A tie: two states from the same second. Settle it from the payloads when they allow.
    if incoming.raw == row.raw:
        return Outcome.NOOP
    rank_in = _rank(kind, incoming.status, incoming.deleted)
    rank_row = _rank(kind, row.status, row.deleted)
    if rank_in is not None and rank_row is not None and rank_in != rank_row:
        return Outcome.APPLIED if rank_in > rank_row else Outcome.STALE
    if source.fetched:
        # A fetch against an event of its own second: Stripe served it either before or
        # after that event happened. It wins only over a row that has not moved since
        # before the fetch was made (or was itself written by a fetch); otherwise the
        # event stays, since any change after it has an event of its own on the way,
        # and the caller may fetch again to settle the tie.
        if row.source_event_id is None or source.supersedes == (
            row.source_ts,
            row.source_event_id,
        ):
            return Outcome.APPLIED
        return Outcome.REFETCH
    # Nothing better to ask: Stripe cannot be asked (settle_ties_locally), or portal
    # sessions cannot be retrieved. The later arrival wins.
    if source.settle_ties_locally or not PROJECTIONS[kind].refetchable:
        return Outcome.APPLIED
    return Outcome.REFETCH


def parse_incoming(kind: MirrorKind, obj: dict[str, Any], action: Action) -> Incoming:
    projection = PROJECTIONS[kind]
    model = projection.parse(obj)
    deleted = action == "delete" or bool(getattr(model, "deleted", False))
    raw = obj
    if kind == "billing_portal.session" and "url" in raw:
        # Known to be a session even if the object forgot its `object` key.
        raw = {key: value for key, value in raw.items() if key != "url"}
    return Incoming(
        model=model,
        action="delete" if deleted else action,
        raw=raw,
        status=projection.status(model),
        deleted=deleted,
        stub=deleted and set(obj) <= _STUB_KEYS,
    )


@functools.cache
def row_query(kind: MirrorKind) -> Select[Any]:
    # Built once per kind: constructing and cache-keying a statement costs more CPU than
    # the round trip it makes (bench/README.md).
    table = PROJECTIONS[kind].table
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


@functools.cache
def _upsert_statement(
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


def upsert_statement(
    dialect: str, table: Table, columns: tuple[str, ...], insert_only: frozenset[str]
) -> Executable:
    return _upsert_statement(dialect, table, columns, insert_only)


async def _upsert(
    session: AsyncSession,
    table: Table,
    rows: list[dict[str, Any]],
    *,
    insert_only: frozenset[str] = frozenset(),
) -> None:
    dialect = session.get_bind().dialect.name
    for columns, batch in upsert_batches(rows):
        statement = _upsert_statement(dialect, table, columns, insert_only)
        await session.execute(statement, batch[0] if len(batch) == 1 else batch)


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
    projection = PROJECTIONS[kind]
    # The tombstone flag is sticky: nothing brings a deleted object back.
    deleted = incoming.deleted or (row is not None and row.deleted)
    if incoming.stub:
        values = _common(object_id, source, deleted=True, raw=None)
    else:
        values = _common(object_id, source, deleted=deleted, raw=incoming.raw)
        values.update(projection.columns(incoming.model, incoming.action))
        created = getattr(incoming.model, "created", None)
        if created is not None:
            values["stripe_created"] = created
    if kind == "customer" and deleted:
        # customer.deleted unlinks the app user (they get a new customer next time).
        values["app_user_id"] = None
    parent = Upsert(projection.table, [values], insert_only=projection.insert_only)
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


async def _write(session: AsyncSession, plan: WritePlan) -> None:
    for upsert in plan.upserts:
        await _upsert(session, upsert.table, upsert.rows, insert_only=upsert.insert_only)
    if plan.left_out is not None:
        await session.execute(plan.left_out.statement, plan.left_out.params)


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
        price = item.price
        recurring = price.recurring if price is not None else None
        values = _common(item.id, source, deleted=False, raw=items_raw.get(item.id))
        values.update(
            subscription_id=subscription.id,
            price_id=price.id if price is not None else None,
            product_id=price.product if price is not None else None,
            quantity=item.quantity,
            usage_type=recurring.usage_type if recurring is not None else None,
            tax_behavior=price.tax_behavior if price is not None else None,
            interval=recurring.interval if recurring is not None else None,
            # Older payloads keep the period on the subscription only.
            current_period_start=item.current_period_start or subscription.current_period_start,
            current_period_end=item.current_period_end or subscription.current_period_end,
        )
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


def _cut_short(kind: MirrorKind, incoming: Incoming, source: Source) -> bool:
    """An event whose child list Stripe cut at one page (`has_more`): the whole set is
    fetched instead (the gateway pages through it), so a set is never left half-replaced.
    Without Stripe to ask, the page is applied as it is (nothing it lacks is removed)."""
    if source.fetched or source.settle_ties_locally or incoming.stub:
        return False
    if kind == "subscription":
        return bool(incoming.model.items.has_more)
    if kind == ENTITLEMENT_SUMMARY:
        return bool(incoming.model.entitlements.has_more)
    return False


def decide(kind: MirrorKind, row: RowState | None, incoming: Incoming, source: Source) -> Outcome:
    """The watermark rule (DESIGN.md section 4 item 4), pure: every writer decides here."""
    outcome = _decide(kind, row, incoming, source)
    if outcome is Outcome.APPLIED and _cut_short(kind, incoming, source):
        return Outcome.REFETCH
    return outcome


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


async def apply_answer(
    session: AsyncSession,
    kind: MirrorKind,
    object_id: str,
    fetched: Fetched | None,
    *,
    account: str,
    livemode: bool,
    supersedes: Watermark | None,
) -> Outcome:
    """Apply Stripe's answer to a re-fetch that settles a tie: the object, or None when
    Stripe answered 404 (`apply_missing`). Outcomes as for `apply_fetched`."""
    if fetched is None:
        return await apply_missing(
            session,
            kind,
            object_id,
            utcnow(),
            account=account,
            livemode=livemode,
            supersedes=supersedes,
        )
    return await apply_fetched(
        session,
        kind,
        fetched.object,
        fetched.fetched_at,
        account=account,
        livemode=livemode,
        supersedes=supersedes,
    )


@dataclass(frozen=True, slots=True)
class EventRoute:
    kind: MirrorKind
    action: Action


_SUBSCRIPTION_EVENTS = (
    "created",
    "updated",
    "paused",
    "resumed",
    "trial_will_end",
    "pending_update_applied",
    "pending_update_expired",
)
_INVOICE_EVENTS = (
    "created",
    "finalized",
    "paid",
    "payment_failed",
    "payment_succeeded",
    "updated",
    "voided",
    "marked_uncollectible",
)

EVENT_ROUTES: dict[str, EventRoute] = {
    "customer.created": EventRoute("customer", "upsert"),
    "customer.updated": EventRoute("customer", "upsert"),
    "customer.deleted": EventRoute("customer", "delete"),
    **{
        f"customer.subscription.{s}": EventRoute("subscription", "upsert")
        for s in _SUBSCRIPTION_EVENTS
    },
    "customer.subscription.deleted": EventRoute("subscription", "delete"),
    "payment_method.attached": EventRoute("payment_method", "upsert"),
    "payment_method.updated": EventRoute("payment_method", "upsert"),
    "payment_method.automatically_updated": EventRoute("payment_method", "upsert"),
    "payment_method.detached": EventRoute("payment_method", "detach"),
    "customer.tax_id.created": EventRoute("tax_id", "upsert"),
    "customer.tax_id.updated": EventRoute("tax_id", "upsert"),
    "customer.tax_id.deleted": EventRoute("tax_id", "delete"),
    **{f"invoice.{s}": EventRoute("invoice", "upsert") for s in _INVOICE_EVENTS},
    "invoice.deleted": EventRoute("invoice", "delete"),
    "billing_portal.configuration.created": EventRoute("billing_portal.configuration", "upsert"),
    "billing_portal.configuration.updated": EventRoute("billing_portal.configuration", "upsert"),
    "billing_portal.session.created": EventRoute("billing_portal.session", "upsert"),
    "entitlements.active_entitlement_summary.updated": EventRoute(ENTITLEMENT_SUMMARY, "upsert"),
}
"""Every event type the mirror projects (DESIGN.md section 4 item 6); others are ignored."""
