"""Webhook intake's PostgreSQL fast path: a new event recorded and applied on the asyncpg
connection itself, without SQLAlchemy's execution layer (about 80 us of CPU per statement
against 17 us through asyncpg, bench/README.md).

Only the transport differs from the general path (mirror/intake.py): the statements are the
general path's own SQLAlchemy constructs, compiled once for asyncpg and run as prepared
statements (asyncpg caches them per connection), bound through SQLAlchemy's own bind
processors; the decision is `apply.decide` and the rows are `apply.plan_write`. Anything
that is not a new event decided without Stripe (a redelivery, a tie for Stripe, a failure
of any kind) rolls back and goes to the general path, which then does all of it: nothing
is acknowledged before a commit, so the event is applied once, or recorded `failed` there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from portal_service.mirror.apply import (
    ENTITLEMENTS_LEFT_OUT,
    ITEMS_LEFT_OUT,
    Incoming,
    MirrorKind,
    Outcome,
    RowState,
    Source,
    WritePlan,
    decide,
    plan_write,
    row_query,
    upsert_batches,
    upsert_statement,
)
from portal_service.mirror.observers import APPLY_OBSERVER


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    defaults: Mapping[str, Callable[[], Any]]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = values[name] if name in values else self.defaults[name]()
            out.append(value if process is None else process(value))
        return out


def _default_of(table: Table | None, name: str) -> Callable[[], Any]:
    # The Python-side column defaults SQLAlchemy's execution context would fill in.
    column = table.c.get(name) if table is not None else None
    default = column.default if column is not None else None
    if default is None:
        raise KeyError(name)
    if default.is_scalar:
        value = default.arg  # type: ignore[attr-defined]
        return lambda: value
    if default.is_callable:
        function = default.arg  # type: ignore[attr-defined]
        return lambda: function(None)
    raise KeyError(name)


@functools.cache
def _compile(
    statement: Executable, dialect: Dialect, columns: tuple[str, ...], table: Table | None
) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup or ())
    # SQLAlchemy's own bind processors (JSON encoding, UTC datetimes), so the values are
    # what the session would have sent.
    processors = compiled._bind_processors
    defaults = {name: _default_of(table, name) for name in names if name not in columns}
    return _Compiled(str(compiled), names, tuple(processors.get(n) for n in names), defaults)


def _left_out_sql() -> dict[int, str]:
    # The general path's DELETEs use an expanding IN, which is compiled per list length;
    # here the same condition over one array parameter.
    items = (
        "DELETE FROM subscription_items WHERE subscription_id = $1::VARCHAR "
        "AND id <> ALL($2::VARCHAR[])"
    )
    entitlements = (
        "DELETE FROM entitlements WHERE customer_id = $1::VARCHAR "
        "AND account = $2::VARCHAR AND id <> ALL($3::VARCHAR[])"
    )
    return {id(ITEMS_LEFT_OUT): items, id(ENTITLEMENTS_LEFT_OUT): entitlements}


_LEFT_OUT_SQL = _left_out_sql()
_LEFT_OUT_PARAMS = {
    id(ITEMS_LEFT_OUT): ("parent", "keep"),
    id(ENTITLEMENTS_LEFT_OUT): ("parent", "account", "keep"),
}


class _Fallback(Exception):
    """Not for this path: roll back and let the general path do it all."""


class FastIntake:
    """Records and applies a new event on PostgreSQL in one transaction on the raw asyncpg
    connection: BEGIN, insert the event with the object's lock, read the row, write, COMMIT."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect

    @classmethod
    def for_sessionmaker(cls, sessionmaker: async_sessionmaker[AsyncSession]) -> FastIntake | None:
        """The fast path for this sessionmaker's engine, or None: not PostgreSQL over asyncpg,
        or an apply observer is installed (issue 12's outbox writes through the session)."""
        if sessionmaker.kw.get("info", {}).get(APPLY_OBSERVER) is not None:
            return None
        engine = sessionmaker.kw.get("bind")
        if not isinstance(engine, AsyncEngine) or engine.dialect.driver != "asyncpg":
            return None
        return cls(engine)

    async def receive(
        self,
        *,
        event: Mapping[str, Any],
        insert_event: Executable,
        kind: MirrorKind,
        object_id: str,
        incoming: Incoming,
        source: Source,
    ) -> Outcome | None:
        """Record the event (`event`: the parameters of `insert_event`, locking) and apply
        it. None, with nothing written, when the general path must handle it instead."""
        dispatch = self._engine.sync_engine.dispatch
        if dispatch.before_cursor_execute or dispatch.after_cursor_execute:
            # Statement hooks (tracing, the tests' statement counts) see every statement
            # of an engine that has them: the general path sends its statements through them.
            return None
        async with self._engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            try:
                async with driver.transaction():
                    insert = self._compiled(insert_event, tuple(event), None)
                    if await driver.fetchrow(insert.sql, *insert.args(event)) is None:
                        raise _Fallback  # already recorded: a redelivery or a retry
                    read = self._compiled(row_query(kind), ("object_id",), None)
                    record = await driver.fetchrow(read.sql, object_id)
                    row = None
                    if record is not None:
                        row = RowState(
                            source_ts=record["source_ts"],
                            source_event_id=record["source_event_id"],
                            deleted=record["deleted"],
                            raw=record["raw"],
                            status=record.get("status"),
                        )
                    outcome = decide(kind, row, incoming, source)
                    if outcome is Outcome.REFETCH:
                        raise _Fallback  # Stripe must settle it: two transactions
                    if outcome is Outcome.APPLIED:
                        plan = plan_write(kind, object_id, incoming, source, row=row)
                        await self._write(driver, plan)
            except Exception:
                if driver.is_closed():
                    await conn.invalidate()
                # Rolled back: the general path records it failed, or applies it.
                return None
        return outcome

    def _compiled(
        self, statement: Executable, columns: tuple[str, ...], table: Table | None
    ) -> _Compiled:
        return _compile(statement, self._dialect, columns, table)

    async def _write(self, driver: Any, plan: WritePlan) -> None:
        for upsert in plan.upserts:
            for columns, batch in upsert_batches(upsert.rows):
                statement = upsert_statement(
                    "postgresql", upsert.table, columns, upsert.insert_only
                )
                compiled = self._compiled(statement, columns, upsert.table)
                if len(batch) == 1:
                    await driver.execute(compiled.sql, *compiled.args(batch[0]))
                else:
                    await driver.executemany(compiled.sql, [compiled.args(v) for v in batch])
        if plan.left_out is not None:
            key = id(plan.left_out.statement)
            params: Sequence[Any] = [plan.left_out.params[n] for n in _LEFT_OUT_PARAMS[key]]
            await driver.execute(_LEFT_OUT_SQL[key], *params)
