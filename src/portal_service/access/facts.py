"""Mirror rows read into the policy's facts: the one place that knows how to find a user's
customer and a subscription's items, for /me/* and for the flow checks of POST /portal-sessions.

Every read is scoped to one mode and the platform account (`account = ''`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    ColumnElement,
    CompoundSelect,
    Row,
    Select,
    and_,
    bindparam,
    null,
    type_coerce,
    union_all,
)
from sqlalchemy import select as select_columns
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, defer
from sqlmodel import col, func, select

from portal_service.access.policy import ItemFacts, SubscriptionFacts
from portal_service.db import UTCDateTime
from portal_service.mirror.projections import ITEM_FACT_COLUMNS
from portal_service.mirror.tables import (
    PLATFORM_ACCOUNT,
    Customer,
    Entitlement,
    Invoice,
    Subscription,
    SubscriptionItem,
)

UNPAID_INVOICE_STATUSES = ("open", "uncollectible")
ENDED_STATUSES = ("canceled", "incomplete_expired")


def without_raw(raw_column: Any) -> Any:
    """A loader option leaving `raw` (the whole Stripe object as JSON) unread.

    Reads for apps never show it, and decoding it is most of the cost of loading a row;
    touching it on a row loaded this way raises instead of querying behind our back.
    """
    return defer(raw_column, raiseload=True)


def _live_customer(
    key: Mapped[Any], value: Any, *, livemode: Any
) -> tuple[ColumnElement[bool], ...]:
    return (
        key == value,
        col(Customer.livemode) == livemode,
        col(Customer.account) == PLATFORM_ACCOUNT,
        col(Customer.deleted).is_(False),
    )


async def linked_customer(
    session: AsyncSession, *, app_user_id: str, livemode: bool, load_raw: bool = True
) -> Customer | None:
    """The live (not deleted) customer linked to an app user, in this mode, on the platform.

    `load_raw=False` for read-only callers: the row comes without its `raw` column.
    """
    statement = select(Customer).where(
        *_live_customer(col(Customer.app_user_id), app_user_id, livemode=livemode)
    )
    if not load_raw:
        statement = statement.options(without_raw(col(Customer.raw)))
    result = await session.execute(statement)
    return result.scalars().first()


async def customer_subscriptions(
    session: AsyncSession, customer_id: str, *, livemode: bool
) -> list[Subscription]:
    """All of a customer's subscriptions (canceled ones too), newest first."""
    result = await session.execute(
        select(Subscription)
        .where(
            col(Subscription.customer_id) == customer_id,
            col(Subscription.livemode) == livemode,
            col(Subscription.account) == PLATFORM_ACCOUNT,
        )
        .order_by(col(Subscription.stripe_created).desc(), col(Subscription.id).desc())
    )
    return list(result.scalars().all())


async def subscription_items(
    session: AsyncSession, subscription_ids: Sequence[str], *, load_raw: bool = True
) -> dict[str, list[SubscriptionItem]]:
    """Live items of each subscription, keyed by subscription id (one query for all)."""
    out: dict[str, list[SubscriptionItem]] = {sid: [] for sid in subscription_ids}
    if not subscription_ids:
        return out
    statement = (
        select(SubscriptionItem)
        .where(
            col(SubscriptionItem.subscription_id).in_(subscription_ids),
            col(SubscriptionItem.deleted).is_(False),
        )
        .order_by(col(SubscriptionItem.stripe_created), col(SubscriptionItem.id))
    )
    if not load_raw:
        statement = statement.options(without_raw(col(SubscriptionItem.raw)))
    result = await session.execute(statement)
    for item in result.scalars().all():
        out[item.subscription_id].append(item)
    return out


def _oldest_unpaid_created() -> Any:
    # type_coerce keeps the UTC type through min(), which SQLite would hand back as text.
    return type_coerce(func.min(col(Invoice.stripe_created)), UTCDateTime())


def _unpaid_invoice() -> tuple[ColumnElement[bool], ...]:
    return (
        col(Invoice.status).in_(UNPAID_INVOICE_STATUSES),
        col(Invoice.deleted).is_(False),
    )


async def oldest_unpaid_invoices(
    session: AsyncSession, subscription_ids: Sequence[str]
) -> dict[str, datetime]:
    """Creation time of each subscription's oldest unpaid invoice (for the past_due grace)."""
    if not subscription_ids:
        return {}
    result = await session.execute(
        select(col(Invoice.subscription_id), _oldest_unpaid_created())
        .where(col(Invoice.subscription_id).in_(subscription_ids), *_unpaid_invoice())
        .group_by(col(Invoice.subscription_id))
    )
    return {sid: created for sid, created in result.all() if sid is not None}


def effective_status(status: str | None, *, deleted: bool) -> str:
    """The status the policy judges: a tombstone is over, whatever status it last held."""
    if deleted and status not in ENDED_STATUSES:
        # A tombstone comes from customer.subscription.deleted, which Stripe sends only for
        # an ended subscription.
        return "canceled"
    return status or ""


# The subscription and item columns the policy reads, under the same names in the mirror
# tables, in the facts and in the rows of `customer_access`.
_SUBSCRIPTION_COLUMNS = (
    "status",
    "deleted",
    "cancel_at_period_end",
    "cancel_at",
    "current_period_start",
    "current_period_end",
    "pause_collection_behavior",
    "collection_method",
    "schedule_id",
)


def _item_facts(item: SubscriptionItem | Row[*tuple[Any, ...]]) -> ItemFacts:
    return ItemFacts(**{name: getattr(item, name) for name in ITEM_FACT_COLUMNS})


def _facts(
    sub: Subscription | Row[*tuple[Any, ...]],
    *,
    id_: str,
    items: tuple[ItemFacts, ...],
    oldest_unpaid_invoice_created: datetime | None,
) -> SubscriptionFacts:
    """Facts from a mirrored subscription or a `customer_access` row, which name alike."""
    return SubscriptionFacts(
        id=id_,
        status=effective_status(sub.status, deleted=sub.deleted),
        cancel_at_period_end=sub.cancel_at_period_end,
        cancel_at=sub.cancel_at,
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        pause_collection_behavior=sub.pause_collection_behavior,
        collection_method=sub.collection_method,
        schedule_id=sub.schedule_id,
        items=items,
        oldest_unpaid_invoice_created=oldest_unpaid_invoice_created,
    )


async def subscription_facts(
    session: AsyncSession,
    subscriptions: Sequence[Subscription],
    *,
    items: Mapping[str, Sequence[SubscriptionItem]] | None = None,
) -> dict[str, SubscriptionFacts]:
    """Facts for several subscriptions with two queries, keyed by subscription id.

    `items` (from `subscription_items`) saves a query when the caller already has them.
    """
    ids = [s.id for s in subscriptions]
    if items is None:
        items = await subscription_items(session, ids)
    unpaid = await oldest_unpaid_invoices(session, ids)
    return {
        s.id: _facts(
            s,
            id_=s.id,
            items=tuple(_item_facts(item) for item in items.get(s.id, ())),
            oldest_unpaid_invoice_created=unpaid.get(s.id),
        )
        for s in subscriptions
    }


@dataclass(frozen=True, slots=True)
class CustomerAccess:
    """What the entitlements answer is computed from: a customer, its subscriptions, its features."""

    customer_id: str
    livemode: bool
    subscriptions: tuple[SubscriptionFacts, ...]
    features: tuple[str, ...]


def _oldest_unpaid_invoice_created() -> Any:
    # Correlated per subscription row, so only the invoices of the customer's own
    # subscriptions are looked at (ix_invoices_subscription_id).
    return (
        select(_oldest_unpaid_created())
        .where(col(Invoice.subscription_id) == col(Subscription.id), *_unpaid_invoice())
        .correlate(Subscription)
        .scalar_subquery()
    )


@cache
def _customer_access_statement(key: Literal["app_user_id", "customer_id"]) -> CompoundSelect[Any]:
    """Built once per lookup key, with bound parameters `key` and `livemode`: building and
    hashing this statement on every request cost more than running it."""
    livemode = bindparam("livemode", type_=Boolean())
    which = _live_customer(
        col(Customer.app_user_id) if key == "app_user_id" else col(Customer.id),
        bindparam("key"),
        livemode=livemode,
    )
    # SQLAlchemy's select: sqlmodel's is typed for at most four columns.
    subscription_rows: Select[*tuple[Any, ...]] = (
        select_columns(
            col(Customer.id).label("customer_id"),
            col(Subscription.id).label("subscription_id"),
            *(col(getattr(Subscription, name)).label(name) for name in _SUBSCRIPTION_COLUMNS),
            _oldest_unpaid_invoice_created().label("oldest_unpaid_invoice_created"),
            col(SubscriptionItem.id).label("item_id"),
            *(col(getattr(SubscriptionItem, name)).label(name) for name in ITEM_FACT_COLUMNS),
            null().label("lookup_key"),
        )
        .select_from(Customer)
        .outerjoin(
            Subscription,
            and_(
                col(Subscription.customer_id) == col(Customer.id),
                col(Subscription.livemode) == livemode,
                col(Subscription.account) == PLATFORM_ACCOUNT,
            ),
        )
        .outerjoin(
            SubscriptionItem,
            and_(
                col(SubscriptionItem.subscription_id) == col(Subscription.id),
                col(SubscriptionItem.deleted).is_(False),
            ),
        )
        .where(*which)
    )
    # The column types of a UNION come from its first branch: these NULLs need none.
    padding = [null()] * (len(subscription_rows.selected_columns) - 2)
    feature_rows = select_columns(
        col(Entitlement.customer_id), *padding, col(Entitlement.lookup_key)
    ).where(
        col(Entitlement.customer_id).in_(select(col(Customer.id)).where(*which)),
        col(Entitlement.livemode) == livemode,
        col(Entitlement.account) == PLATFORM_ACCOUNT,
        col(Entitlement.deleted).is_(False),
        col(Entitlement.lookup_key).is_not(None),
    )
    return union_all(subscription_rows, feature_rows)


def customer_access_query(
    *, livemode: bool, app_user_id: str | None = None, customer_id: str | None = None
) -> tuple[CompoundSelect[Any], dict[str, Any]]:
    """The statement and parameters of `customer_access`, for callers that run it on a
    synchronous connection (the notification outbox, at commit); rows go to
    `customer_access_from_rows`."""
    if app_user_id is not None and customer_id is None:
        statement, key = _customer_access_statement("app_user_id"), app_user_id
    elif customer_id is not None and app_user_id is None:
        statement, key = _customer_access_statement("customer_id"), customer_id
    else:
        raise ValueError("customer_access needs exactly one of app_user_id and customer_id")
    return statement, {"key": key, "livemode": livemode}


async def customer_access(
    session: AsyncSession,
    *,
    livemode: bool,
    app_user_id: str | None = None,
    customer_id: str | None = None,
) -> CustomerAccess | None:
    """The live customer linked to `app_user_id` (or with id `customer_id`) in this mode on the
    platform, with the facts of all its subscriptions and its active features; None if none.

    The hot path of GET /me/entitlements, so one statement (one round trip) in all, and
    only the columns the policy reads (never `raw`): the customer, outer-joined to its
    subscriptions, their live items and each one's oldest unpaid invoice; then, in a
    second branch of a UNION ALL, its features. Every branch is an indexed lookup.
    """
    statement, parameters = customer_access_query(
        livemode=livemode, app_user_id=app_user_id, customer_id=customer_id
    )
    rows: Sequence[Row[*tuple[Any, ...]]] = (await session.execute(statement, parameters)).all()
    return customer_access_from_rows(rows, livemode=livemode)


def customer_access_from_rows(
    rows: Sequence[Row[*tuple[Any, ...]]], *, livemode: bool
) -> CustomerAccess | None:
    """The rows of `customer_access_query` as facts; None when no live customer matched."""
    # A live customer always has its row in the first branch (an outer join keeps it).
    found = next((row.customer_id for row in rows if row.lookup_key is None), None)
    if found is None:
        return None
    features: set[str] = set()
    subscriptions: dict[str, tuple[Any, dict[str, ItemFacts]]] = {}
    # app_user_id is unique among live customers of a mode and account: one customer.
    for row in rows:
        if row.customer_id != found:
            continue
        if row.lookup_key is not None:
            features.add(row.lookup_key)
        elif row.subscription_id is not None:
            _, items = subscriptions.setdefault(row.subscription_id, (row, {}))
            if row.item_id is not None:
                items[row.item_id] = _item_facts(row)
    return CustomerAccess(
        customer_id=found,
        livemode=livemode,
        subscriptions=tuple(
            _facts(
                sub,
                id_=sub.subscription_id,
                # Ordered by id: the same mirror state always gives equal facts.
                items=tuple(items[item_id] for item_id in sorted(items)),
                oldest_unpaid_invoice_created=sub.oldest_unpaid_invoice_created,
            )
            for _, (sub, items) in sorted(subscriptions.items())
        ),
        features=tuple(sorted(features)),
    )
