"""Same-second ties that only Stripe can settle (ARCHITECTURE.md, "Webhook processing"):
Stripe is asked for the object again, outside any transaction, and its answer applied under
the object's lock, stamped with Stripe's `Date`. Intake, thin events and sync settle their
ties here; reconcile applies its fixes through `apply_answer`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncSession

from portal_service.db import utcnow
from portal_service.gateway import Fetched, Gateway, StripeObjectMissing
from portal_service.mirror.apply import apply_fetched, apply_missing, watermark
from portal_service.mirror.ordering import Outcome, Watermark
from portal_service.mirror.projections import ENTITLEMENT_SUMMARY, KINDS, MirrorKind


async def fetch_answer(
    gateway: Gateway, kind: MirrorKind, object_id: str, *, account: str
) -> Fetched | None:
    """Stripe's current object, or None when Stripe no longer has it (404)."""
    entry = KINDS[kind]
    try:
        if entry.retrieve is not None:
            return await gateway.retrieve(entry.retrieve, object_id, account=account)
        if kind == ENTITLEMENT_SUMMARY:
            return await gateway.list_active_entitlements(object_id, account=account)
    except StripeObjectMissing:
        return None
    raise ValueError(f"Stripe cannot be asked for a {kind} again")


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
    """Apply Stripe's answer for one object: the object, or None when Stripe answered 404
    (`apply_missing`). Outcomes as for `apply_fetched`."""
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
class Tie:
    """An object whose row tied with a state of the same second."""

    kind: MirrorKind
    object_id: str
    account: str
    livemode: bool
    # The row's watermark when the tie was seen: Stripe's answer is newer than it.
    seen: Watermark | None


async def settle_tie(
    session: AsyncSession, tie: Tie, answer: Fetched | None
) -> tuple[Outcome, Tie]:
    """Apply Stripe's answer (`fetch_answer`) to a tie, in a savepoint of the caller's
    transaction, which commits it. REFETCH: nothing written, since an event of the answer's
    own second reached the row meanwhile; the tie is returned with the row's watermark now,
    to ask Stripe again with (after the transaction, and the lock, have ended)."""
    async with session.begin_nested():
        outcome = await apply_answer(
            session,
            tie.kind,
            tie.object_id,
            answer,
            account=tie.account,
            livemode=tie.livemode,
            supersedes=tie.seen,
        )
        if outcome is Outcome.REFETCH:
            tie = replace(tie, seen=await watermark(session, tie.kind, tie.object_id))
    return outcome, tie
