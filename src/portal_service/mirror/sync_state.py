"""Sync's progress, one `sync_state` row per kind (and Connect account): where `--resume`
continues, and which kinds a previous run completed."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.db import utcnow
from portal_service.mirror.tables import SyncState, table_of

_SYNC_STATE = table_of(SyncState)


def state_key(kind: str, account: str) -> str:
    """The `sync_state` row of a kind: one per Connect account besides the platform's."""
    return f"{kind}@{account}" if account else kind


async def save_cursor(session: AsyncSession, kind: str, cursor: str) -> None:
    await session.execute(
        update(_SYNC_STATE)
        .where(_SYNC_STATE.c.kind == kind)
        .values(cursor=cursor, updated_at=utcnow())
    )


async def start_kinds(
    sessionmaker: async_sessionmaker[AsyncSession],
    kinds: Sequence[str],
    *,
    resume: bool,
    account: str = "",
) -> dict[str, str | None]:
    """The kinds to sync now and the cursor each resumes after. Without `resume`, every kind
    starts over. With it, a kind a previous run completed is skipped and one it left
    unfinished continues after its cursor. Each Connect account has its own progress."""
    todo: dict[str, str | None] = {}
    keys = {kind: state_key(kind, account) for kind in kinds}
    async with sessionmaker() as session:
        existing = {
            row.kind: row
            for row in (
                await session.execute(
                    select(_SYNC_STATE).where(_SYNC_STATE.c.kind.in_(list(keys.values())))
                )
            ).all()
        }
        now = utcnow()
        for kind in kinds:
            key = keys[kind]
            row = existing.get(key)
            if resume and row is not None:
                if row.completed_at is None:
                    todo[kind] = row.cursor
                continue
            if row is None:
                session.add(SyncState(kind=key, started_at=now, updated_at=now))
            else:
                await session.execute(
                    update(_SYNC_STATE)
                    .where(_SYNC_STATE.c.kind == key)
                    .values(cursor=None, started_at=now, updated_at=now, completed_at=None)
                )
            todo[kind] = None
        await session.commit()
    return todo


async def mark_completed(session: AsyncSession, kind: str) -> None:
    await session.execute(
        update(_SYNC_STATE)
        .where(_SYNC_STATE.c.kind == kind)
        .values(completed_at=utcnow(), updated_at=utcnow())
    )
