"""Engines, sessions and the column types every table shares (UTC datetimes, JSON)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import JSON, DateTime, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator

from portal_service.app_state import app_state

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")
# Execution option naming the statement that opens a SQLite transaction (see for_reads).
_SQLITE_BEGIN = "portal_sqlite_begin"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend: SQLite hands back naive values, so restore the zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime written to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite/aiosqlite emit no BEGIN by themselves; take the write lock up front so two
    # transactions never deadlock upgrading a read lock (ARCHITECTURE.md, "Webhook processing").
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Read-only sessions (`for_reads`) need a snapshot, not the write lock: in WAL mode
        # a deferred BEGIN never waits for a writer, nor makes one wait.
        connection.exec_driver_sql(
            connection.get_execution_options().get(_SQLITE_BEGIN, "BEGIN IMMEDIATE")
        )


def _discard_closed_connections(engine: AsyncEngine) -> None:
    # Instead of pool_pre_ping, which costs three round trips per checkout on asyncpg (BEGIN,
    # `;`, ROLLBACK): asyncpg sees a pooled connection's socket close on its own, on the event
    # loop, when the server ends the backend (a restart, pg_terminate_backend, an idle
    # timeout). Such a connection is refused at checkout, with no round trip, and the pool
    # hands out a fresh one (SQLAlchemy retries a checkout that raises DisconnectionError).
    # A connection that dies unseen fails its statement instead; SQLAlchemy then discards
    # every connection of the pool that is older (its disconnect handling), so the pool
    # recovers after that one error either way.
    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this pooled connection")


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, hide_parameters=True)
        _configure_sqlite(engine)
        return engine
    # hide_parameters: a database error is logged with its statement, never with the
    # customer data bound to it. pool_size with no overflow: the same 20 connections at most
    # as 10 + 10 overflow, but each one opened is kept. An overflow connection is closed at
    # checkin, so a burst above 10 requests paid a new connection (its codec set-up and
    # every statement prepared again) over and over (bench/README.md, portal sessions).
    engine = create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_pre_ping=False,
        pool_size=20,
        max_overflow=0,
    )
    _discard_closed_connections(engine)
    return engine


def for_reads(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for sessions that only read (ReadSession).

    PostgreSQL: no transaction at all. Under READ COMMITTED every statement takes its own
    snapshot even inside one, so BEGIN and ROLLBACK would be two round trips that buy
    nothing. SQLite: a deferred BEGIN instead of the writers' BEGIN IMMEDIATE.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_SQLITE_BEGIN: "BEGIN"})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    # Commits when the endpoint returns, before the response is sent (scope="function").
    async with app_state(request).sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with app_state(request).read_sessionmaker() as session:
        try:
            yield session
        finally:
            await session.rollback()


DbSession = Annotated[AsyncSession, Depends(_session, scope="function")]
"""The request's read-write session: committed before the response, rolled back on error."""

ReadSession = Annotated[AsyncSession, Depends(_read_session, scope="function")]
"""A read-only session, on DATABASE_READ_URL when set."""
