"""Cursor pagination shared by every collection route: `?limit=` and `?cursor=` in,
`{"data": [...], "next_cursor": ...}` out (README.md, "The API at a glance").

Keyset, not offset: a page never repeats or skips a row when rows are added in between,
and the cost of a page does not grow with its depth. The cursor is the sort key of the
last row of the page, as base64url JSON; it carries no filter, so the query that reads
the next page applies the caller's scope again and a cursor copied from someone else's
list can at most move the starting point within the caller's own rows.

Reuse: build a `Keyset` for the list's ordering, declare `page: PageParams` on the route,
call `paginate(...)` and return a `Page[Schema]` subclass built from its result.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, UnaryExpression, and_, literal, or_, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, Mapped

from portal_service.errors import InvalidRequest

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# A cursor holds one timestamp and one Stripe id (at most 255 characters): 512 is ample.
MAX_CURSOR_LENGTH = 512

T = TypeVar("T")
Row = TypeVar("Row")

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class Page(BaseModel, Generic[T]):
    """One page of a collection.

    Subclass it per list (`class InvoicePage(Page[Invoice]): ...`): openapi.json then names
    the schema `InvoicePage` instead of `Page_Invoice_`.
    """

    data: list[T]
    next_cursor: str | None = Field(
        description="Pass as `?cursor=` to read the next page; null on the last page."
    )


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    cursor: str | None


async def _page_request(  # async: a plain `def` dependency runs in the thread pool
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT}.")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR_LENGTH,
            description="`next_cursor` of the previous page; omit for the first page.",
        ),
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor)


PageParams = Annotated[PageRequest, Depends(_page_request)]
"""`?limit=` (default 20, 1 to 100: anything else is 422 `invalid_request`) and `?cursor=`."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page starts: the sort key of the previous page's last row."""

    time: datetime | None
    id: str


class Keyset(Generic[Row]):
    """An ordering on (a timestamp column, the unique id column), newest first by default.

    A nullable timestamp sorts its NULLs last in both directions, the same on PostgreSQL
    and SQLite (whose own defaults disagree). A NOT NULL one gets a plain row-value
    comparison, which PostgreSQL can answer from an index on (..., time, id).
    """

    def __init__(
        self,
        kind: str,
        time: Mapped[datetime | None],
        id_: Mapped[str],
        *,
        descending: bool = True,
    ) -> None:
        if not isinstance(time, InstrumentedAttribute) or not isinstance(
            id_, InstrumentedAttribute
        ):
            raise TypeError("a Keyset orders by mapped columns: col(Model.field)")
        # The kind is written into each cursor, so one list's cursor is refused by another.
        self.kind = kind
        self.descending = descending
        self._time_key = time.key
        self._id_key = id_.key
        self._time: ColumnElement[datetime | None] = time.expression
        self._id: ColumnElement[str] = id_.expression
        self._time_nullable = bool(getattr(self._time, "nullable", True))

    def order_by(self) -> tuple[UnaryExpression[Any], ...]:
        if self.descending:
            first, second = self._time.desc(), self._id.desc()
        else:
            first, second = self._time.asc(), self._id.asc()
        return (first.nulls_last() if self._time_nullable else first, second)

    def _beyond(self, left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[bool]:
        return left < right if self.descending else left > right

    def after(self, position: Position) -> ColumnElement[bool]:
        """Rows strictly after `position` in this ordering."""
        time, id_ = self._time, self._id
        # Bound with the columns' own types, so SQLite compares UTC text with UTC text.
        at_time = literal(position.time, type_=time.type)
        at_id = literal(position.id, type_=id_.type)
        if not self._time_nullable:
            return self._beyond(tuple_(time, id_), tuple_(at_time, at_id))
        if position.time is None:
            # Already among the NULL times, which come last: only the remaining ids follow.
            return and_(time.is_(None), self._beyond(id_, at_id))
        return or_(
            self._beyond(time, at_time),
            and_(time == at_time, self._beyond(id_, at_id)),
            time.is_(None),
        )

    def position_of(self, row: Row) -> Position:
        return Position(time=getattr(row, self._time_key), id=getattr(row, self._id_key))

    def encode(self, position: Position) -> str:
        time = position.time.astimezone(UTC).isoformat() if position.time is not None else None
        raw = json.dumps([self.kind, time, position.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode("ascii")

    def decode(self, cursor: str) -> Position:
        """The position a cursor names; 422 `invalid_request` for anything we did not issue."""
        try:
            return self._decode(cursor)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidRequest("The cursor is not valid for this list.") from exc

    def _decode(self, cursor: str) -> Position:
        # urlsafe_b64decode silently drops characters outside the alphabet: check first.
        if not _BASE64URL.match(cursor):
            raise ValueError("not base64url")
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded).decode("utf-8"))
        if not isinstance(decoded, list) or len(decoded) != 3:
            raise ValueError("not a cursor")
        kind, time, ident = decoded
        if kind != self.kind:
            raise ValueError("a cursor of another list")
        if not isinstance(ident, str) or not ident or len(ident) > 255:
            raise ValueError("bad id")
        if time is None:
            if not self._time_nullable:
                raise ValueError("null time in a NOT NULL ordering")
            return Position(time=None, id=ident)
        if not isinstance(time, str):
            raise ValueError("bad time")
        parsed = datetime.fromisoformat(time)
        if parsed.utcoffset() is None:
            raise ValueError("naive time")
        return Position(time=parsed.astimezone(UTC), id=ident)


async def paginate(
    session: AsyncSession,
    statement: Select[Row],
    *,
    keyset: Keyset[Row],
    page: PageRequest,
) -> tuple[Sequence[Row], str | None]:
    """One page of `statement` (already filtered to the caller's scope) and the next cursor."""
    if page.cursor is not None:
        statement = statement.where(keyset.after(keyset.decode(page.cursor)))
    # One row more than asked tells whether another page exists without a count query.
    statement = statement.order_by(*keyset.order_by()).limit(page.limit + 1)
    rows = (await session.execute(statement)).scalars().all()
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    return rows, keyset.encode(keyset.position_of(rows[-1]))
