"""Which Stripe customer a portal session is for: the user's linked one, one created on the
first visit, or one a backend names; and linking/unlinking users to existing customers.

No transaction is held across a Stripe call: reads end (commit) before the gateway is
called, and a new customer's link is committed as soon as it is written, so that a retry
after Stripe has forgotten the idempotency key (24 h) cannot create a second customer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, func, or_, select

from portal_service.access.facts import linked_customer
from portal_service.db import utcnow
from portal_service.errors import CustomerNotFound, DomainError, StripeError
from portal_service.gateway import Fetched, Gateway, StripeObjectMissing
from portal_service.mirror import stripe_models
from portal_service.mirror.apply import apply_fetched
from portal_service.mirror.rows import customer_row
from portal_service.mirror.tables import PLATFORM_ACCOUNT, Customer
from portal_service.ops.logging import get_logger
from portal_service.portal.schemas import CustomerLinkOut

log = get_logger("portal_service.portal.customers")

# A replayed creation can hand back a customer that was deleted or re-linked since;
# each such answer moves to the next key. More than a few in a row is a bug, not a race.
MAX_CREATE_ATTEMPTS = 4


class CustomerAlreadyLinked(DomainError):
    status = 409
    code = "customer_already_linked"
    default_detail = "This customer is linked to another app user; unlink it first."


class CustomerLinkConflict(DomainError):
    status = 409
    code = "customer_link_conflict"
    default_detail = "The user's customer link changed concurrently; retry the request."


@dataclass(frozen=True, slots=True)
class ResolvedCustomer:
    id: str
    app_user_id: str | None
    email: str | None
    metadata: dict[str, str]

    @classmethod
    def from_row(cls, row: Customer) -> ResolvedCustomer:
        return cls(
            id=row.id,
            app_user_id=row.app_user_id,
            email=row.email,
            metadata=_metadata(row.raw),
        )


def _metadata(raw: dict[str, Any] | None) -> dict[str, str]:
    return _string_values((raw or {}).get("metadata"))


def _string_values(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        return {}
    return {str(k): v for k, v in metadata.items() if isinstance(v, str)}


# What a session reads of the user's linked customer (access.facts.linked_customer's
# conditions): the metadata out of `raw`, not the whole object decoded, in a statement
# built once and run on the session's connection without the ORM.
_LINKED_BRIEF = select(
    col(Customer.id),
    col(Customer.app_user_id),
    col(Customer.email),
    col(Customer.raw)["metadata"],
).where(
    col(Customer.app_user_id) == bindparam("app_user_id"),
    col(Customer.livemode) == bindparam("livemode"),
    col(Customer.account) == PLATFORM_ACCOUNT,
    col(Customer.deleted).is_(False),
)


async def _linked_brief(
    session: AsyncSession, *, app_user_id: str, livemode: bool
) -> ResolvedCustomer | None:
    connection = await session.connection()
    result = await connection.execute(
        _LINKED_BRIEF, {"app_user_id": app_user_id, "livemode": livemode}
    )
    row = result.first()
    if row is None:
        return None
    return ResolvedCustomer(
        id=row[0], app_user_id=row[1], email=row[2], metadata=_string_values(row[3])
    )


def customer_idempotency_key(app_user_id: str, generation: int) -> str:
    """Stripe's Idempotency-Key for a user's n-th customer: racing first visits share it."""
    digest = hashlib.sha256(app_user_id.encode()).hexdigest()[:32]
    return f"portal-customer:{digest}:{generation}"


async def _customer_generation(session: AsyncSession, *, app_user_id: str, livemode: bool) -> int:
    # How many customers this user has had in this mode: linked now, or created for it
    # (metadata.app_user_id) and since deleted or unlinked. app_user_id itself is cleared
    # on deletion, the metadata in `raw` is not.
    metadata_user = col(Customer.raw)[("metadata", "app_user_id")].as_string()
    result = await session.execute(
        select(func.count())
        .select_from(Customer)
        .where(
            col(Customer.livemode) == livemode,
            col(Customer.account) == PLATFORM_ACCOUNT,
            or_(col(Customer.app_user_id) == app_user_id, metadata_user == app_user_id),
        )
    )
    return int(result.scalar_one())


async def _get_for_update(session: AsyncSession, customer_id: str) -> Customer | None:
    # populate_existing: the identity map may hold a copy read before a Stripe call.
    return await session.get(Customer, customer_id, with_for_update=True, populate_existing=True)


async def _insert(session: AsyncSession, row: Customer) -> bool:
    """Insert in a savepoint; False if a unique constraint refused it (a racing writer)."""
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        # The savepoint's rollback has already expunged the pending row.
        return False
    return True


async def _set_app_user(session: AsyncSession, row: Customer, app_user_id: str | None) -> bool:
    """Set or clear the link in a savepoint; False if the unique index refused it."""
    try:
        async with session.begin_nested():
            row.app_user_id = app_user_id
            row.updated_at = utcnow()
    except IntegrityError:
        # The savepoint's rollback expired the row: reload it before anyone reads it.
        await session.refresh(row)
        return False
    return True


async def resolve_for_user(
    session: AsyncSession,
    gateway: Gateway,
    *,
    app_user_id: str,
    email: str | None,
    livemode: bool,
    auto_create: bool,
) -> ResolvedCustomer:
    """The user's linked customer, created (and linked) on the first visit if allowed."""
    linked = await _linked_brief(session, app_user_id=app_user_id, livemode=livemode)
    if linked is not None:
        return linked
    if not auto_create:
        raise CustomerNotFound(
            "No billing customer is linked to this user and AUTO_CREATE_CUSTOMERS is off."
        )
    generation = await _customer_generation(session, app_user_id=app_user_id, livemode=livemode)
    for _ in range(MAX_CREATE_ATTEMPTS):
        await session.commit()  # end the read transaction before calling Stripe
        created = await gateway.create_customer(
            email=email,
            app_user_id=app_user_id,
            idempotency_key=customer_idempotency_key(app_user_id, generation),
        )
        resolved = await _link_created(session, created, app_user_id=app_user_id, livemode=livemode)
        if resolved is not None:
            # Durable now, whatever happens to the portal session afterwards.
            await session.commit()
            return resolved
        generation += 1
    raise StripeError("Stripe kept answering with customers that cannot be linked to this user.")


async def _link_created(
    session: AsyncSession, created: dict[str, Any], *, app_user_id: str, livemode: bool
) -> ResolvedCustomer | None:
    """Link the customer Stripe answered with; None if it is a stale replay (deleted, or
    someone else's now) and the next idempotency key must be tried."""
    # Not the mirror's write path (apply_fetched): this row is inserted in a savepoint under
    # the app_user_id unique index, and it has no watermark, so any later webhook about it
    # applies over it.
    fresh = customer_row(created, account=PLATFORM_ACCOUNT, app_user_id=app_user_id)
    row = await _get_for_update(session, fresh.id)
    if row is None:
        if await _insert(session, fresh):
            log.info("customer_created", customer_id=fresh.id)
            return ResolvedCustomer.from_row(fresh)
        # A racing request (or the customer.created webhook) wrote the row first.
        row = await _get_for_update(session, fresh.id)
        if row is None:
            # The unique (mode, account, app_user_id) index refused: the user was
            # linked to another customer meanwhile. That link wins.
            return await _current_link(session, app_user_id=app_user_id, livemode=livemode)
    if row.deleted or row.livemode != livemode or row.account != PLATFORM_ACCOUNT:
        log.info("customer_replay_stale", customer_id=row.id)
        return None
    if row.app_user_id == app_user_id:
        return ResolvedCustomer.from_row(row)
    if row.app_user_id is not None:
        log.info("customer_replay_linked_elsewhere", customer_id=row.id)
        return None
    if await _set_app_user(session, row, app_user_id):
        return ResolvedCustomer.from_row(row)
    return await _current_link(session, app_user_id=app_user_id, livemode=livemode)


async def _current_link(
    session: AsyncSession, *, app_user_id: str, livemode: bool
) -> ResolvedCustomer:
    row = await linked_customer(session, app_user_id=app_user_id, livemode=livemode)
    if row is None:
        raise CustomerLinkConflict()
    await session.refresh(row)
    return ResolvedCustomer.from_row(row)


async def resolve_by_id(
    session: AsyncSession, gateway: Gateway, *, customer_id: str, livemode: bool
) -> ResolvedCustomer:
    """A customer a backend names: live, of this mode, on the platform account."""
    row = await session.get(Customer, customer_id)
    if row is not None:
        if row.deleted or row.livemode != livemode or row.account != PLATFORM_ACCOUNT:
            raise CustomerNotFound(f"No customer {customer_id} in this mode.")
        return ResolvedCustomer.from_row(row)
    # Used for this session only: linking is PUT /users/{id}/customer's job.
    parsed, _ = await _fetch_customer(session, gateway, customer_id=customer_id, livemode=livemode)
    return ResolvedCustomer(
        id=parsed.id, app_user_id=None, email=parsed.email, metadata=dict(parsed.metadata)
    )


async def _fetch_customer(
    session: AsyncSession, gateway: Gateway, *, customer_id: str, livemode: bool
) -> tuple[stripe_models.Customer, Fetched]:
    """A customer the mirror lacks, read from Stripe: (parsed, what the gateway fetched)."""
    await session.commit()  # end the read transaction before calling Stripe
    try:
        fetched = await gateway.retrieve("customer", customer_id)
    except StripeObjectMissing as exc:
        raise CustomerNotFound(f"No customer {customer_id} in this mode.") from exc
    parsed = stripe_models.Customer.model_validate(fetched.object)
    if parsed.deleted or parsed.livemode != livemode:
        raise CustomerNotFound(f"No customer {customer_id} in this mode.")
    return parsed, fetched


async def link_customer(
    session: AsyncSession,
    gateway: Gateway,
    *,
    app_user_id: str,
    customer_id: str,
    livemode: bool,
) -> CustomerLinkOut:
    """PUT semantics: afterwards the user's customer is `customer_id`. A user linked to
    another customer is moved (that customer is kept in Stripe, unlinked); a customer
    linked to another user is refused (409 customer_already_linked)."""
    if await session.get(Customer, customer_id) is None:
        _, fetched = await _fetch_customer(
            session, gateway, customer_id=customer_id, livemode=livemode
        )
        # Through the mirror's path, stamped with Stripe's clock: an older event arriving
        # later cannot roll the row back. It never sets app_user_id; the link is ours.
        await apply_fetched(session, "customer", fetched.object, fetched.fetched_at)

    row = await _get_for_update(session, customer_id)
    if row is None or row.deleted or row.livemode != livemode or row.account != PLATFORM_ACCOUNT:
        raise CustomerNotFound(f"No live customer {customer_id} in this mode.")
    if row.app_user_id not in (None, app_user_id):
        raise CustomerAlreadyLinked()

    previous = await linked_customer(session, app_user_id=app_user_id, livemode=livemode)
    previous_id: str | None = None
    if previous is not None and previous.id != row.id:
        previous_id = previous.id
        # Unlink first, in its own statement: the unique index is checked row by row.
        if not await _set_app_user(session, previous, None):
            raise CustomerLinkConflict()
    if row.app_user_id != app_user_id and not await _set_app_user(session, row, app_user_id):
        raise CustomerLinkConflict()
    log.info("customer_linked", customer_id=row.id, previous_customer_id=previous_id)
    return CustomerLinkOut(
        app_user_id=app_user_id,
        customer_id=row.id,
        email=row.email,
        livemode=row.livemode,
        previous_customer_id=previous_id,
    )


async def unlink_customer(session: AsyncSession, *, app_user_id: str, livemode: bool) -> str:
    """Clear the user's link; the customer stays (in Stripe and in the mirror). Its id."""
    row = await linked_customer(session, app_user_id=app_user_id, livemode=livemode)
    if row is None:
        raise CustomerNotFound("No billing customer is linked to this user.")
    row.app_user_id = None
    row.updated_at = utcnow()
    await session.flush()
    log.info("customer_unlinked", customer_id=row.id)
    return row.id
