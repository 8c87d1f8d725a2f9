"""The traps of this stack that db.py exists for (CONVENTIONS.md): timezone-aware datetimes on
SQLite, SQLite writers taking the lock up front while readers never wait for it, read
sessions without transaction round trips on PostgreSQL, and the request session committing
before the response leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col, func, select
from starlette.types import Message, Receive, Scope, Send

from portal_service import migrations
from portal_service.config import Settings
from portal_service.db import (
    DbSession,
    create_engine,
    create_sessionmaker,
    for_reads,
    utcnow,
)
from portal_service.errors import Forbidden
from portal_service.main import create_app
from portal_service.mirror.tables import Customer

CET = timezone(timedelta(hours=1))


@pytest.mark.sqlite
class TestUTCDateTime:
    async def test_datetimes_come_back_aware_and_in_utc(self, db: AsyncSession) -> None:
        written = datetime(2025, 6, 15, 13, 30, 15, 123456, tzinfo=CET)
        db.add(Customer(id="cus_tz", stripe_created=written))
        await db.commit()
        db.expunge_all()
        row = await db.get(Customer, "cus_tz")
        assert row is not None
        assert row.stripe_created is not None
        assert row.stripe_created.utcoffset() == timedelta(0)
        assert row.stripe_created == written

    async def test_aggregates_keep_the_zone(self, db: AsyncSession) -> None:
        early = datetime(2025, 1, 1, tzinfo=UTC)
        db.add_all([Customer(id="cus_1", stripe_created=early), Customer(id="cus_2")])
        await db.commit()
        oldest = await db.scalar(select(func.min(col(Customer.stripe_created))))
        assert oldest == early
        assert oldest.tzinfo is not None

    async def test_a_naive_datetime_is_refused(self, db: AsyncSession) -> None:
        db.add(Customer(id="cus_naive", stripe_created=datetime(2025, 1, 1)))  # noqa: DTZ001
        with pytest.raises(Exception, match="naive datetime"):
            await db.commit()


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite file, whatever the run's backend: these are SQLite's own traps."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'locks.db'}"
    await migrations.upgrade_async(url)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


def record_statements(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


@pytest.mark.sqlite
class TestSqliteLocking:
    async def test_a_write_session_takes_the_lock_before_its_first_statement(
        self, sqlite_engine: AsyncEngine
    ) -> None:
        seen = record_statements(sqlite_engine)
        async with create_sessionmaker(sqlite_engine)() as session:
            await session.execute(text("SELECT count(*) FROM customers"))
            await session.commit()
        assert seen[:2] == ["BEGIN IMMEDIATE", "SELECT count(*) FROM customers"]

    async def test_a_read_session_never_waits_for_a_writer(
        self, sqlite_engine: AsyncEngine
    ) -> None:
        async with sqlite_engine.connect() as writer:
            # BEGIN IMMEDIATE: the writer holds the database lock until it commits.
            await writer.execute(
                insert(Customer.__table__).values(  # type: ignore[arg-type]
                    id="cus_w", livemode=False, account="", deleted=False, updated_at=utcnow()
                )
            )
            async with create_sessionmaker(for_reads(sqlite_engine))() as reader:
                # Without the guard a reader queued for the lock would wait out busy_timeout (30 s).
                count = await asyncio.wait_for(
                    reader.scalar(text("SELECT count(*) FROM customers")), timeout=10
                )
            assert count == 0  # a snapshot before the uncommitted write
            await writer.commit()


class TestPostgresReads:
    async def test_read_sessions_send_no_begin_or_rollback(self, engine: AsyncEngine) -> None:
        # Under READ COMMITTED a transaction gives reads nothing a single statement lacks:
        # each statement of a read session is its own transaction, with no BEGIN round trip.
        # txid_current() names the transaction a statement runs in.
        txid = text("SELECT txid_current()")
        async with create_sessionmaker(for_reads(engine))() as reader:
            assert await reader.scalar(txid) != await reader.scalar(txid)
        async with create_sessionmaker(engine)() as writer:
            assert await writer.scalar(txid) == await writer.scalar(txid)


class ResponseStartProbe:
    """Wraps an ASGI app; when the response starts, runs `check` and keeps its result."""

    def __init__(self, app: Any, check: Callable[[], Any]) -> None:
        self.app, self.check, self.seen = app, check, []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def probe(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.seen.append(await self.check())
            await send(message)

        await self.app(scope, receive, probe)


@pytest.mark.sqlite
class TestRequestSession:
    async def test_commits_before_the_response_is_sent(
        self, engine: AsyncEngine, settings_factory: Callable[..., Settings]
    ) -> None:
        # FastAPI runs a dependency's code after `yield` once the response is out, unless
        # the dependency is function-scoped: a client that reads right after a 2xx (or a
        # crash in between) must find the write committed.
        app = create_app(settings_factory())

        async def write(session: DbSession, fail: bool = False) -> dict[str, str]:
            session.add(Customer(id="cus_committed" if not fail else "cus_rolled_back"))
            await session.flush()
            if fail:
                raise Forbidden()
            return {"ok": "yes"}

        app.add_api_route("/_probe", write, methods=["POST"])

        async def committed() -> list[str]:
            async with create_sessionmaker(for_reads(engine))() as other:
                found = await other.scalars(select(col(Customer.id)))
                return list(found)

        probe = ResponseStartProbe(app, committed)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=probe)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                ok = await client.post("/_probe")
                refused = await client.post("/_probe", params={"fail": "true"})
        assert (ok.status_code, refused.status_code) == (200, 403)
        assert probe.seen == [["cus_committed"], ["cus_committed"]]
