"""Webhook intake's PostgreSQL fast path: a new event recorded and applied on the asyncpg
connection itself, without SQLAlchemy's execution layer (about 80 us of CPU per statement
against 17 us through asyncpg, bench/README.md).

Only the transport differs from the general path (mirror/intake.py): the statements are the
general path's own SQLAlchemy constructs, compiled once for asyncpg and run as prepared
statements (asyncpg caches them per connection), bound through SQLAlchemy's own bind
processors; the decision is `ordering.decide` and the rows are `write_plan.plan_write`.
that is not a new event decided without Stripe (a redelivery, a tie for Stripe, a failure
of any kind) rolls back and goes to the general path, which then does all of it: nothing
is acknowledged before a commit, so the event is applied once, or recorded `failed` there.

The app's lifespan opens the fast path's own asyncpg pool (mirror/intake_pool.py) on the engine's
database: a checkout from SQLAlchemy's pool costs three greenlet bridges (connect, the raw
connection, close), and the webhooks do not wait behind the API's reads and writes for the
engine's connections. Without that pool (tests, commands) the fast path checks out the
engine's pooled connection instead, as before.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import JSON, Executable, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from portal_service.mirror.apply import row_query
from portal_service.mirror.intake_pool import IntakePool
from portal_service.mirror.observers import APPLY_OBSERVER
from portal_service.mirror.ordering import Incoming, Outcome, RowState, Source, decide
from portal_service.mirror.projections import MirrorKind
from portal_service.mirror.write_plan import (
    ENTITLEMENTS_LEFT_OUT,
    ITEMS_LEFT_OUT,
    WritePlan,
    plan_write,
    upsert_batches,
    upsert_statement,
)


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
        value = default.arg  # type: ignore[attr-defined]  # a ScalarElementColumnDefault
        return lambda: value
    if default.is_callable:
        function = default.arg  # type: ignore[attr-defined]  # a CallableColumnDefault
        return lambda: function(None)
    raise KeyError(name)


@functools.cache
def _compile(
    statement: Executable, dialect: Dialect, columns: tuple[str, ...], table: Table | None
) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))  # type: ignore[attr-defined]  # a ClauseElement
    names = tuple(compiled.positiontup or ())
    # SQLAlchemy's own bind processors (JSON encoding, UTC datetimes), so the values are
    # what the session would have sent.
    processors = dict(compiled._bind_processors)
    for name in names:
        bind = compiled.binds.get(name)
        if bind is not None and isinstance(bind.type, JSON) and name in processors:
            processors[name] = _fast_json(processors[name])
    table = table if table is not None else getattr(statement, "table", None)
    defaults = {name: _default_of(table, name) for name in names if name not in columns}
    return _Compiled(str(compiled), names, tuple(processors.get(n) for n in names), defaults)


def _fast_json(general: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """JSON columns encoded by orjson (several times faster than json.dumps on a payload of
    a few KB); jsonb stores the same value either way. Anything orjson refuses (an integer
    beyond 64 bits) and every non-container value go through SQLAlchemy's own encoder."""

    def process(value: Any) -> Any:
        if isinstance(value, dict | list):
            try:
                return orjson.dumps(value).decode()
            except TypeError:
                pass
        return general(value)

    return process


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

    def __init__(self, engine: AsyncEngine, pool: IntakePool | None = None) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._pool = pool

    @classmethod
    def for_sessionmaker(
        cls, sessionmaker: async_sessionmaker[AsyncSession], pool: IntakePool | None = None
    ) -> FastIntake | None:
        """The fast path for this sessionmaker's engine, or None: not PostgreSQL over asyncpg,
        or an apply observer is installed (issue 12's outbox writes through the session).
        `pool`: `open_pool`'s on that engine, else the engine's own pooled connections."""
        if sessionmaker.kw.get("info", {}).get(APPLY_OBSERVER) is not None:
            return None
        engine = sessionmaker.kw.get("bind")
        if not isinstance(engine, AsyncEngine) or engine.dialect.driver != "asyncpg":
            return None
        return cls(engine, pool)

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
        apply = functools.partial(
            self._transaction, event, insert_event, kind, object_id, incoming, source
        )
        if self._pool is not None:
            try:
                async with self._pool.connection() as connection:
                    return await apply(connection)
            except Exception:
                # No turn within the bound, or a connection that could not be opened or
                # died unseen (asyncpg replaces a closed one at its next acquire): the
                # general path takes the event.
                return None
        async with self._engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            outcome = await apply(driver)
            if outcome is None and driver.is_closed():
                await conn.invalidate()
        return outcome

    async def _transaction(
        self,
        event: Mapping[str, Any],
        insert_event: Executable,
        kind: MirrorKind,
        object_id: str,
        incoming: Incoming,
        source: Source,
        driver: Any,
    ) -> Outcome | None:
        try:
            async with driver.transaction():
                return await self._apply(
                    driver, event, insert_event, kind, object_id, incoming, source
                )
        except Exception:
            # Rolled back: the general path records it failed, or applies it.
            return None

    async def _apply(
        self,
        driver: Any,
        event: Mapping[str, Any],
        insert_event: Executable,
        kind: MirrorKind,
        object_id: str,
        incoming: Incoming,
        source: Source,
    ) -> Outcome:
        insert = self._compiled(insert_event, tuple(event), None)
        read = self._compiled(row_query(kind), ("object_id",), None)
        sql = _record_and_read(insert.sql, read.sql, len(insert.names))
        record = await driver.fetchrow(sql, *insert.args(event), object_id)
        if record is None:
            raise _Fallback  # already recorded: a redelivery or a retry
        row = None
        if record["present"]:
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
            inserted = await self._write(driver, plan)
            if row is None and not inserted:
                # The row was committed by the lock's previous holder after this
                # statement's snapshot was taken: decided on a row not seen, so undo.
                raise _Fallback
        return outcome

    def _compiled(
        self, statement: Executable, columns: tuple[str, ...], table: Table | None
    ) -> _Compiled:
        return _compile(statement, self._dialect, columns, table)

    async def _write(self, driver: Any, plan: WritePlan) -> bool:
        """Run the plan in one statement (the children's writes as CTEs around the parent's
        upsert). True when the parent's row was inserted rather than updated."""
        parts: list[tuple[str, list[Any]]] = []
        for upsert in plan.upserts:
            for columns, batch in upsert_batches(upsert.rows):
                statement = upsert_statement(
                    "postgresql", upsert.table, columns, upsert.insert_only
                )
                compiled = self._compiled(statement, columns, upsert.table)
                parts += [(compiled.sql, compiled.args(values)) for values in batch]
        if plan.left_out is not None:
            key = id(plan.left_out.statement)
            params = [plan.left_out.params[n] for n in _LEFT_OUT_PARAMS[key]]
            parts.append((_LEFT_OUT_SQL[key], params))
        (parent_sql, parent_args), children = parts[0], parts[1:]
        parent_sql += " RETURNING (xmax = 0) AS inserted"
        if sum(len(part_args) for _, part_args in parts) > _MAX_PARAMETERS:
            for child_sql, child_args in children:
                await driver.execute(child_sql, *child_args)
            return bool(await driver.fetchval(parent_sql, *parent_args))
        args = [arg for _, child_args in children for arg in child_args]
        sql = _merged(
            tuple(child_sql for child_sql, _ in children),
            tuple(len(child_args) for _, child_args in children),
            parent_sql,
        )
        return bool(await driver.fetchval(sql, *args, *parent_args))


_PARAMETER = re.compile(r"\$(\d+)")
# PostgreSQL's limit of parameters per statement is 65535; asyncpg's is 32767.
_MAX_PARAMETERS = 32_000


def _shifted(sql: str, offset: int) -> str:
    """`sql` with its parameters $1.. renumbered from $offset+1 (our own compiled SQL: no
    string literals)."""
    if not offset:
        return sql
    return _PARAMETER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


@functools.cache
def _merged(children: tuple[str, ...], counts: tuple[int, ...], parent: str) -> str:
    """The children's statements as CTEs of the parent's, parameters renumbered in order."""
    if not children:
        return parent
    ctes: list[str] = []
    offset = 0
    for number, (sql, count) in enumerate(zip(children, counts, strict=True)):
        ctes.append(f"w{number} AS ({_shifted(sql, offset)})")
        offset += count
    return f"WITH {', '.join(ctes)} {_shifted(parent, offset)}"


@functools.cache
def _record_and_read(insert_sql: str, read_sql: str, offset: int) -> str:
    """The event insert (which takes the object's lock in its RETURNING) and the row read in
    one statement. The read cannot use the statement's snapshot, taken before the lock was
    granted: FOR UPDATE reads the newest committed version of an existing row instead (the
    read runs only for an inserted event, after the lock, as the LATERAL join depends on
    it), and a row committed since the snapshot that it cannot see is caught by the write
    (`_write` returns False: updated, not inserted)."""
    read = _shifted(read_sql, offset).replace("SELECT ", "SELECT true AS present, ", 1)
    return (
        # Our own compiled statements; every value travels as a parameter.
        f"WITH ev AS ({insert_sql}) SELECT r.* FROM ev LEFT JOIN LATERAL "  # noqa: S608
        f"({read} AND ev.id IS NOT NULL FOR UPDATE) AS r ON true"
    )
