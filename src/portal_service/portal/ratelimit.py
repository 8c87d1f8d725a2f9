"""The per-user portal session limit (RATE_LIMIT_PORTAL_SESSIONS), counted from the
`portal_sessions` rows in the database so that every replica sees the same count.

Requests that race past the check together can exceed the limit by the number of
replicas' concurrent requests; it bounds abuse, it is not a quota.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, bindparam
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.errors import RateLimited
from portal_service.mirror.tables import PortalSession


def _nth_newest(owner_column: Any) -> Any:
    # The limit-th newest session in the window: once it ages out, one more is allowed.
    return (
        select(col(PortalSession.created))
        .where(owner_column == bindparam("owner"), col(PortalSession.created) > bindparam("since"))
        .order_by(col(PortalSession.created).desc())
        .offset(bindparam("skip", type_=Integer))
        .limit(1)
    )


_BY_APP_USER = _nth_newest(col(PortalSession.app_user_id))
_BY_CUSTOMER = _nth_newest(col(PortalSession.customer_id))


async def check_rate_limit(
    session: AsyncSession,
    *,
    app_user_id: str | None,
    customer_id: str,
    limit: int,
    window_seconds: int,
    now: datetime,
) -> None:
    """Raise RateLimited (with Retry-After) if `limit` sessions were created in the window
    for this app user (or, for a customer without one, for this customer)."""
    if limit <= 0:
        raise RateLimited(
            "Portal sessions are disabled (RATE_LIMIT_PORTAL_SESSIONS is 0).",
            headers={"Retry-After": str(window_seconds)},
            extra={"retry_after": window_seconds},
        )
    since = now - timedelta(seconds=window_seconds)
    statement, owner = (
        (_BY_APP_USER, app_user_id) if app_user_id is not None else (_BY_CUSTOMER, customer_id)
    )
    # Core on the session's connection: no ORM entity is loaded, and the statement is
    # built (and its cache key computed) once, not per request.
    connection = await session.connection()
    result = await connection.execute(
        statement, {"owner": owner, "since": since, "skip": limit - 1}
    )
    oldest_counted = result.scalar()
    if oldest_counted is None:
        return
    wait = (oldest_counted + timedelta(seconds=window_seconds) - now).total_seconds()
    retry_after = max(1, math.ceil(wait))
    raise RateLimited(
        f"At most {limit} portal sessions per {window_seconds} s; try again in {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
        extra={"retry_after": retry_after},
    )
