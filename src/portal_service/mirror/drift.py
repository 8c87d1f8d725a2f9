"""What `portal-service reconcile` finds: one `Drift` per difference between a mirrored row
and Stripe's object, and the pure comparisons that find it (mirror/reconcile.py reads both
sides and repairs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from portal_service.gateway.base import Fetched
from portal_service.mirror.ordering import Watermark
from portal_service.mirror.projections import KINDS, MirrorKind

Problem = Literal["missing_here", "missing_there", "differs"]
ItemState = dict[str, tuple[str | None, int | None]]
"""A subscription's items: item id -> (price id, quantity)."""

# Bookkeeping columns: what the mirror adds, not what Stripe says.
_NOT_COMPARED = frozenset(
    {"id", "livemode", "account", "raw", "source_ts", "source_event_id", "updated_at"}
)


@dataclass(frozen=True, slots=True)
class Drift:
    kind: str  # its `--only` name
    object_id: str
    problem: Problem
    fields: tuple[str, ...] = ()
    # Stripe's object when the comparison read it (None: to be retrieved on a fix).
    fetched: Fetched | None = None
    # The row's watermark when it was read: a fix wins only over a row that has not moved.
    seen: Watermark | None = None


@dataclass
class KindReport:
    checked: int = 0
    drift: list[Drift] = field(default_factory=list)
    fixed: Counter[str] = field(default_factory=Counter)

    def count(self, problem: Problem) -> int:
        return sum(1 for d in self.drift if d.problem == problem)


@dataclass(frozen=True, slots=True)
class MirroredRow:
    """A row as reconcile read it: its compared columns and its watermark."""

    values: dict[str, Any]
    seen: Watermark

    @property
    def live(self) -> bool:
        return not self.values.get("deleted")


def _projected(kind: MirrorKind, obj: dict[str, Any]) -> dict[str, Any]:
    entry = KINDS[kind]
    model = entry.parse(obj)
    values = entry.columns(model, "upsert")
    created = getattr(model, "created", None)
    if created is not None:
        values["stripe_created"] = created
    deleted = bool(getattr(model, "deleted", False))
    if kind != "subscription" or deleted:
        # A canceled subscription's row is a tombstone while Stripe still lists it.
        values["deleted"] = deleted
    return values


def differing_fields(kind: MirrorKind, obj: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """The mirror's columns that do not say what Stripe's object says."""
    return sorted(
        name
        for name, value in _projected(kind, obj).items()
        if name not in _NOT_COMPARED and name in row and row[name] != value
    )


def stripe_items(subscription: dict[str, Any]) -> ItemState:
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    out: ItemState = {}
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        price = entry.get("price")
        price_id = price.get("id") if isinstance(price, dict) else price
        out[entry["id"]] = (price_id if isinstance(price_id, str) else None, entry.get("quantity"))
    return out


def entitlement_changes(
    stripe_set: dict[str, str | None], here: dict[str, str | None]
) -> list[str]:
    """A customer's entitlements, id -> lookup key, as Stripe and the mirror hold them:
    `+key` only Stripe has, `-key` only the mirror has, `~key` a lookup key that differs."""
    return sorted(
        [f"+{stripe_set[i] or i}" for i in set(stripe_set) - set(here)]
        + [f"-{here[i] or i}" for i in set(here) - set(stripe_set)]
        + [
            f"~{stripe_set[i] or i}"
            for i in set(here) & set(stripe_set)
            if here[i] != stripe_set[i]
        ]
    )
