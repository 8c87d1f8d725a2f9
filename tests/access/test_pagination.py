"""The cursor helper shared by every collection route: cursors, keyset order, page sizes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.errors import InvalidRequest
from portal_service.mirror.tables import Invoice, StripeEvent
from portal_service.pagination import Keyset, PageRequest, Position, paginate

if TYPE_CHECKING:
    from conftest import MirrorRows

INVOICES = Keyset[Invoice]("invoices", col(Invoice.stripe_created), col(Invoice.id))
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.sqlite
class TestKeysetCursor:
    @pytest.mark.parametrize(
        "position",
        [
            pytest.param(Position(T0, "in_1"), id="time"),
            pytest.param(Position(T0.replace(microsecond=123456), "in_1"), id="microseconds"),
            pytest.param(Position(None, "in_1"), id="null_time"),
            pytest.param(Position(T0, "in_" + "x" * 250), id="long_id"),
        ],
    )
    def test_decode_returns_what_encode_wrote(self, position: Position) -> None:
        assert INVOICES.decode(INVOICES.encode(position)) == position

    def test_cursor_is_unpadded_base64url(self) -> None:
        cursor = INVOICES.encode(Position(T0, "in_?>~"))
        assert "=" not in cursor
        assert set(cursor) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )

    def test_other_zones_are_normalised_to_utc(self) -> None:
        paris = T0.astimezone(timezone(timedelta(hours=2)))
        decoded = INVOICES.decode(INVOICES.encode(Position(paris, "in_1")))
        assert decoded.time == T0
        assert decoded.time is not None
        assert decoded.time.tzinfo == UTC

    @pytest.mark.parametrize(
        "cursor",
        [
            pytest.param("not base64!", id="outside_alphabet"),
            pytest.param("eyJ", id="truncated"),
            pytest.param(b64(b"\xff\xfe"), id="not_utf8"),
            pytest.param(b64(b"{not json"), id="not_json"),
            pytest.param(b64(b'{"k": "invoices"}'), id="object_not_list"),
            pytest.param(b64(b'["invoices", null]'), id="two_fields"),
            pytest.param(b64(b'["payment_methods", null, "pm_1"]'), id="another_lists_cursor"),
            pytest.param(b64(b'["invoices", null, ""]'), id="empty_id"),
            pytest.param(b64(b'["invoices", null, 5]'), id="id_not_string"),
            pytest.param(b64(json.dumps(["invoices", None, "x" * 256]).encode()), id="id_too_long"),
            pytest.param(b64(b'["invoices", 1717243200, "in_1"]'), id="time_not_string"),
            pytest.param(b64(b'["invoices", "yesterday", "in_1"]'), id="time_not_iso"),
            pytest.param(b64(b'["invoices", "2025-06-01T12:00:00", "in_1"]'), id="naive_time"),
        ],
    )
    def test_anything_not_issued_here_is_invalid_request(self, cursor: str) -> None:
        with pytest.raises(InvalidRequest, match="cursor"):
            INVOICES.decode(cursor)

    def test_null_time_is_refused_for_a_not_null_ordering(self) -> None:
        events = Keyset[StripeEvent]("events", col(StripeEvent.received_at), col(StripeEvent.id))
        with pytest.raises(InvalidRequest):
            events.decode(b64(b'["events", null, "evt_1"]'))

    def test_only_mapped_columns_make_a_keyset(self) -> None:
        with pytest.raises(TypeError, match="mapped columns"):
            Keyset[Invoice]("invoices", T0, "id")  # type: ignore[arg-type]


@pytest.fixture
async def invoices(rows: MirrorRows) -> list[str]:
    """Seven invoices, newest first: two share a second (the id breaks the tie), two have no
    creation time (they come last), as a keyset must handle on both databases."""
    times = {
        "in_1": T0,
        "in_2": T0 + timedelta(seconds=1),
        "in_3a": T0 + timedelta(seconds=2),
        "in_3b": T0 + timedelta(seconds=2),
        "in_4": T0 + timedelta(seconds=3, microseconds=500),
        "in_n1": None,
        "in_n2": None,
    }
    for invoice_id, created in times.items():
        await rows.invoice(invoice_id, stripe_created=created)
    return ["in_4", "in_3b", "in_3a", "in_2", "in_1", "in_n2", "in_n1"]


async def read_all(db: AsyncSession, keyset: Keyset[Invoice], limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        found, cursor = await paginate(
            db, select(Invoice), keyset=keyset, page=PageRequest(limit=limit, cursor=cursor)
        )
        pages.append([invoice.id for invoice in found])
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not terminate"


class TestPaginate:
    @pytest.mark.sqlite
    @pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
    async def test_pages_walk_every_row_once_newest_first_nulls_last(
        self, db: AsyncSession, invoices: list[str], limit: int
    ) -> None:
        pages = await read_all(db, INVOICES, limit)
        assert [invoice for page in pages for invoice in page] == invoices
        assert all(len(page) == limit for page in pages[:-1])

    @pytest.mark.sqlite
    async def test_last_full_page_has_no_next_cursor(
        self, db: AsyncSession, invoices: list[str]
    ) -> None:
        found, cursor = await paginate(
            db, select(Invoice), keyset=INVOICES, page=PageRequest(limit=7, cursor=None)
        )
        assert len(found) == 7
        assert cursor is None

    @pytest.mark.sqlite
    async def test_ascending_order_keeps_nulls_last(
        self, db: AsyncSession, invoices: list[str]
    ) -> None:
        oldest_first = Keyset[Invoice](
            "invoices", col(Invoice.stripe_created), col(Invoice.id), descending=False
        )
        pages = await read_all(db, oldest_first, 2)
        assert [invoice for page in pages for invoice in page] == [
            "in_1",
            "in_2",
            "in_3a",
            "in_3b",
            "in_4",
            "in_n1",
            "in_n2",
        ]

    async def test_rows_added_before_the_cursor_do_not_shift_the_next_page(
        self, db: AsyncSession, rows: MirrorRows, invoices: list[str]
    ) -> None:
        first, cursor = await paginate(
            db, select(Invoice), keyset=INVOICES, page=PageRequest(limit=3, cursor=None)
        )
        await rows.invoice("in_newest", stripe_created=T0 + timedelta(days=1))
        second, _ = await paginate(
            db, select(Invoice), keyset=INVOICES, page=PageRequest(limit=3, cursor=cursor)
        )
        assert [i.id for i in first] == invoices[:3]
        assert [i.id for i in second] == invoices[3:6]

    async def test_not_null_ordering_pages_by_row_value(self, db: AsyncSession) -> None:
        events = Keyset[StripeEvent]("events", col(StripeEvent.received_at), col(StripeEvent.id))
        db.add_all(
            StripeEvent(
                id=f"evt_{n}",
                type="customer.updated",
                created=T0,
                payload={},
                received_at=T0 + timedelta(seconds=n // 2),
            )
            for n in range(5)
        )
        await db.commit()
        seen: list[str] = []
        cursor: str | None = None
        while True:
            found, cursor = await paginate(
                db, select(StripeEvent), keyset=events, page=PageRequest(limit=2, cursor=cursor)
            )
            seen += [event.id for event in found]
            if cursor is None:
                break
        assert seen == ["evt_4", "evt_3", "evt_2", "evt_1", "evt_0"]
