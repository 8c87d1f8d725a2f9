"""`customer_access` on PostgreSQL's asyncpg connection itself, for the entitlements fast
lane (access/fast_lane.py): SQLAlchemy's session and execution layer cost several times
the statement's own round trip (bench/README.md).

Only the transport differs: the statement is `customer_access_query`'s, compiled once for
asyncpg and run as a prepared statement (asyncpg caches it per connection), its values
bound and its rows read through SQLAlchemy's own bind and result processors (UTC
datetimes), and the rows go to `customer_access_from_rows` like the session's.
"""

from __future__ import annotations

import asyncio
import functools
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.util import greenlet_spawn

from portal_service.access.facts import (
    CustomerAccess,
    customer_access_from_rows,
    customer_access_query,
)

_Processor = Callable[[Any], Any]
# The statement's own parameters; every other one is a constant of the statement.
_PARAMETERS = ("key", "livemode")


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    binds: tuple[tuple[str, Any, _Processor | None], ...]
    row: Callable[..., Any]
    results: tuple[tuple[int, _Processor], ...]

    def args(self, parameters: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for name, constant, process in self.binds:
            value = parameters[name] if name in _PARAMETERS else constant
            out.append(value if process is None else process(value))
        return out

    def rows(self, records: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for record in records:
            values = list(record)
            for index, process in self.results:
                values[index] = process(values[index])
            out.append(self.row(*values))
        return out


@functools.cache
def _prepare(dialect: Dialect) -> _Prepared:
    """The lookup by app user id (GET /me/entitlements), prepared for `dialect`."""
    statement, parameters = customer_access_query(livemode=False, app_user_id="")
    compiled: Any = statement.compile(dialect=dialect)
    # The constant IN lists (unpaid invoice statuses) are expanded at execution time;
    # their length never changes, so expand them once here.
    expanded = compiled._process_parameters_for_postcompile(compiled.construct_params(parameters))
    processors = {**compiled._bind_processors, **expanded.processors}
    binds = tuple(
        (name, expanded.parameters[name], processors.get(name)) for name in expanded.positiontup
    )
    names = [column[0] for column in compiled._result_columns]
    results = tuple(
        (index, process)
        for index, column in enumerate(compiled._result_columns)
        if (process := column[3]._cached_result_processor(dialect, None)) is not None
    )
    # Rows read by name, as `customer_access_from_rows` reads the session's.
    row = namedtuple("CustomerAccessRow", names)  # type: ignore[misc]  # names known at run time
    return _Prepared(sql=expanded.statement, binds=binds, row=row, results=results)


class FastAccessRead:
    """The entitlements read for one engine (the read replica's when DATABASE_READ_URL is set)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # No more reads at once than the pool has connections: the rest wait here, on an
        # asyncio semaphore, rather than in the pool's queue behind its greenlet bridge.
        size = getattr(engine.sync_engine.pool, "size", None)
        self._slots = asyncio.Semaphore(size() if callable(size) else 10)

    @classmethod
    def for_sessionmaker(
        cls, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> FastAccessRead | None:
        """The fast read for this sessionmaker's engine, or None: not PostgreSQL over asyncpg."""
        engine = sessionmaker.kw.get("bind")
        if not isinstance(engine, AsyncEngine) or engine.dialect.driver != "asyncpg":
            return None
        return cls(engine)

    def available(self) -> bool:
        # Statement hooks (tracing, the tests' statement counts) see every statement of an
        # engine that has them: the session sends its statements through them.
        dispatch = self._engine.sync_engine.dispatch
        return not (dispatch.before_cursor_execute or dispatch.after_cursor_execute)

    async def customer_access(self, *, app_user_id: str, livemode: bool) -> CustomerAccess | None:
        """`facts.customer_access(session, app_user_id=.., livemode=..)`, in one round trip."""
        prepared = _prepare(self._engine.dialect)
        args = prepared.args({"key": app_user_id, "livemode": livemode})
        async with self._slots:
            records = await self._fetch(prepared.sql, args)
        rows = cast("list[Row[Any]]", prepared.rows(records))
        return customer_access_from_rows(rows, livemode=livemode)

    async def _fetch(self, sql: str, args: list[Any]) -> list[Any]:
        # The pool's own checkout and checkin (its checkout listener included: db.py),
        # without a Connection around it: the statement runs outside any transaction,
        # as the read session's do on PostgreSQL (db.for_reads).
        pooled = await greenlet_spawn(self._engine.sync_engine.raw_connection)
        try:
            driver: Any = pooled.driver_connection
            try:
                records: list[Any] = await driver.fetch(sql, *args)
            except Exception:
                if driver.is_closed():
                    await greenlet_spawn(pooled.invalidate)
                raise
        finally:
            await greenlet_spawn(pooled.close)
        return records
