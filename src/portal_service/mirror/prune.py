"""`portal-service prune --older-than DAYS`: delete old recorded events so `stripe_events`
does not grow without bound (README.md, "Command line"). Registered on the CLI with
`app.command()(prune)`.

Only `processed` and `ignored` events go; `failed` and `pending` ones are kept whatever
their age (they still wait for a replay). Deletion runs in small batches, each its own
short transaction, so intake never waits long: on PostgreSQL a batch skips rows another
transaction holds (SKIP LOCKED: a redelivery or replay of that event) instead of waiting
for them; on SQLite each batch holds the write lock only briefly, and the pause between
batches lets waiting writers in.

A redelivery of a pruned event is recorded and applied again like a new one; the object's
watermark (`source_ts`, `source_event_id`) makes it a no-op or `stale`, never a rollback.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated

import typer
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.db import utcnow
from portal_service.mirror.tables import StripeEvent, table_of

PRUNABLE_STATUSES = ("processed", "ignored")
DEFAULT_BATCH_SIZE = 1000
# SQLite: time for writers waiting on the lock (busy_timeout) to take it between batches.
_SQLITE_PAUSE_SECONDS = 0.01

_EVENTS = table_of(StripeEvent)


async def _delete_batch(session: AsyncSession, *, cutoff: datetime, batch_size: int) -> int:
    chosen = (
        select(_EVENTS.c.id)
        .where(_EVENTS.c.status.in_(PRUNABLE_STATUSES), _EVENTS.c.received_at < cutoff)
        .order_by(_EVENTS.c.received_at)
        .limit(batch_size)
    )
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        chosen = chosen.with_for_update(skip_locked=True)
    statement = delete(_EVENTS).where(
        _EVENTS.c.id.in_(chosen.scalar_subquery()),
        # Checked again on the row deleted: its status may have changed since it was chosen.
        _EVENTS.c.status.in_(PRUNABLE_STATUSES),
    )
    result = await session.execute(statement)
    deleted: int = result.rowcount  # type: ignore[attr-defined]  # a CursorResult for DML
    return deleted


async def prune_events(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    older_than: timedelta,
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: datetime | None = None,
) -> int:
    """Delete `processed` and `ignored` events received before now - older_than, batch by
    batch, each committed on its own. Returns how many were deleted."""
    cutoff = (now or utcnow()) - older_than
    total = 0
    while True:
        async with sessionmaker() as session:
            deleted = await _delete_batch(session, cutoff=cutoff, batch_size=batch_size)
            await session.commit()
            sqlite = session.get_bind().dialect.name == "sqlite"
        total += deleted
        if deleted < batch_size:
            return total
        await asyncio.sleep(_SQLITE_PAUSE_SECONDS if sqlite else 0)


def prune(
    older_than: Annotated[
        int,
        typer.Option(
            "--older-than",
            min=1,
            metavar="DAYS",
            help="Delete processed and ignored events received more than DAYS days ago "
            "(failed and pending ones are kept).",
        ),
    ],
    batch_size: Annotated[
        int,
        typer.Option(min=1, max=100_000, help="Events deleted per transaction."),
    ] = DEFAULT_BATCH_SIZE,
) -> None:
    """Delete old recorded webhook events, in batches that never hold intake up."""
    from portal_service.commands import load_settings

    settings = load_settings()
    deleted = asyncio.run(_prune(settings.database_url, days=older_than, batch_size=batch_size))
    typer.echo(f"pruned {deleted} event(s) received more than {older_than} day(s) ago")


async def _prune(database_url: str, *, days: int, batch_size: int) -> int:
    from portal_service.db import create_engine, create_sessionmaker

    engine = create_engine(database_url)
    try:
        return await prune_events(
            create_sessionmaker(engine), older_than=timedelta(days=days), batch_size=batch_size
        )
    finally:
        await engine.dispose()
