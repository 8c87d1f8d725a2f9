"""Sync (never a webhook) links a mirrored customer to the app user its metadata names
(ARCHITECTURE.md, "The data's path")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import not_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal_service.mirror.tables import Customer, table_of

_MAX_APP_USER_ID_LENGTH = 255  # the width of customers.app_user_id
_CUSTOMERS = table_of(Customer)


async def claim_app_user(session: AsyncSession, obj: dict[str, Any]) -> bool:
    """Link the customer to the app user its metadata names, when the row has no user yet
    and no other live customer of the same mode and account holds that one. True when
    it linked."""
    metadata = obj.get("metadata")
    user = metadata.get("app_user_id") if isinstance(metadata, dict) else None
    if not isinstance(user, str) or not user or len(user) > _MAX_APP_USER_ID_LENGTH:
        return False
    row = _CUSTOMERS
    other = _CUSTOMERS.alias("other")
    held = (
        select(other.c.id)
        .where(
            other.c.livemode == row.c.livemode,
            other.c.account == row.c.account,
            other.c.app_user_id == user,
            not_(other.c.deleted),
            other.c.id != row.c.id,
        )
        .exists()
    )
    statement = (
        update(row)
        .where(
            row.c.id == obj["id"],
            row.c.app_user_id.is_(None),
            not_(row.c.deleted),
            not_(held),
        )
        .values(app_user_id=user)
    )
    try:
        async with session.begin_nested():
            result = await session.execute(statement)
    except IntegrityError:
        # A concurrent link (PUT /users/{id}/customer) took the user first: it wins.
        return False
    return bool(getattr(result, "rowcount", 0) == 1)
