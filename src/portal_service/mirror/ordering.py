"""The ordering watermark (ARCHITECTURE.md, "Webhook processing"), pure: whether a state of
an object replaces the mirror's row. Every writer decides here, the general write path
(mirror/apply.py) and PostgreSQL's fast intake alike.

A row's watermark is `(source_ts, source_event_id)`: an older state never replaces a newer
one, a deletion (or a subscription's terminal status) is final, and a same-second tie is
settled from the payloads when they allow, else by asking Stripe (`Outcome.REFETCH`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from portal_service.mirror.projections import ENTITLEMENT_SUMMARY, KINDS, Action, MirrorKind

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
    # wins: deletion is final).
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


@dataclass(frozen=True, slots=True)
class Incoming:
    """A state of an object as the watermark rule compares it."""

    model: Any
    action: Action
    raw: dict[str, Any]
    status: str | None
    deleted: bool
    # A deleted customer as Stripe returns it, `{"id", "object", "deleted": true}`: it
    # carries nothing to project, so only the tombstone columns are written.
    stub: bool


def parse_incoming(kind: MirrorKind, obj: dict[str, Any], action: Action) -> Incoming:
    entry = KINDS[kind]
    model = entry.parse(obj)
    deleted = action == "delete" or bool(getattr(model, "deleted", False))
    raw = obj
    if kind == "billing_portal.session" and "url" in raw:
        # Known to be a session even if the object forgot its `object` key.
        raw = {key: value for key, value in raw.items() if key != "url"}
    return Incoming(
        model=model,
        action="delete" if deleted else action,
        raw=raw,
        status=entry.status(model),
        deleted=deleted,
        stub=deleted and set(obj) <= _STUB_KEYS,
    )


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
    if source.settle_ties_locally or not KINDS[kind].refetchable:
        return Outcome.APPLIED
    return Outcome.REFETCH


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
    """The watermark rule, pure: every writer decides here."""
    outcome = _decide(kind, row, incoming, source)
    if outcome is Outcome.APPLIED and _cut_short(kind, incoming, source):
        return Outcome.REFETCH
    return outcome
