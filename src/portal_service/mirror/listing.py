"""Walking Stripe's lists for sync and reconcile: the kinds `--only` names, pages that
survive a rate limit, and the mirrored customers whose own lists (payment methods, tax
ids) are walked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import Select, not_, select

from portal_service.errors import StripeUnavailable
from portal_service.gateway import Gateway
from portal_service.gateway.base import ListKind, ListPage
from portal_service.mirror.tables import Customer, table_of

PAGE_SIZE = 100
RATE_LIMIT_RETRIES = 3

Sleep = Callable[[float], Awaitable[None]]

_CUSTOMERS = table_of(Customer)


def choose_kinds(value: str | None, choices: Sequence[str]) -> list[str]:
    """`--only a,b`: the kinds named, in the order of `choices`; all of them when None.
    ValueError names what is unknown."""
    if value is None:
        return list(choices)
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(names - set(choices))
    if unknown or not names:
        raise ValueError(
            f"unknown kind(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(choices)}"
        )
    return [kind for kind in choices if kind in names]


def retry_after(exc: StripeUnavailable) -> float | None:
    """Seconds Stripe asked us to wait (a 429), None when it did not say (an outage)."""
    value = (exc.headers or {}).get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


async def pages(
    gateway: Gateway,
    kind: ListKind,
    params: dict[str, Any],
    *,
    customer: str | None = None,
    account: str,
    retries: int,
    sleep: Sleep,
) -> AsyncIterator[ListPage]:
    """The gateway's pages; after a 429 (Retry-After), wait and continue after the last
    object yielded, `retries` times in a row at most. An outage without Retry-After is
    raised at once."""
    cursor = params.get("starting_after")
    attempt = 0
    while True:
        query = {**params, "limit": PAGE_SIZE}
        if cursor:
            query["starting_after"] = cursor
        try:
            async for page in gateway.list_pages(
                kind, params=query, customer=customer, account=account
            ):
                attempt = 0
                yield page
                if page.objects:
                    cursor = page.objects[-1]["id"]
            return
        except StripeUnavailable as exc:
            delay = retry_after(exc)
            if delay is None or attempt >= retries:
                raise
            attempt += 1
            await sleep(delay)


def live_customer_ids(*, livemode: bool, account: str) -> Select[Any]:
    """The ids of the mode's and account's live mirrored customers, in id order (reconcile
    and sync walk them)."""
    return (
        select(_CUSTOMERS.c.id)
        .where(
            _CUSTOMERS.c.livemode == livemode,
            _CUSTOMERS.c.account == account,
            not_(_CUSTOMERS.c.deleted),
        )
        .order_by(_CUSTOMERS.c.id)
    )
