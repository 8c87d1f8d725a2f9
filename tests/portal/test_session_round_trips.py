"""The round trips of one successful POST /portal-sessions on PostgreSQL (issue 8), pinned:
the reads before the Stripe call run outside a transaction, and the session is recorded
with one INSERT .. ON CONFLICT DO NOTHING, itself outside a transaction. A change that
adds a statement, a BEGIN or a COMMIT fails here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from portal.fakes import Mirror, StripeFake
from portal_service.mirror.tables import PortalSession
from support import backend_headers, user_headers


@contextmanager
def round_trips(engine: AsyncEngine) -> Iterator[list[str]]:
    """What the engine sends to the server: statements (savepoints included), and BEGIN,
    COMMIT and ROLLBACK when the connection is in a transaction (asyncpg sends none of
    them for a connection in autocommit; SQLAlchemy's events fire either way)."""
    seen: list[str] = []
    sync_engine = engine.sync_engine

    def statement(*args: Any) -> None:
        seen.append(" ".join(str(args[2]).split()))

    def transaction(kind: str) -> Callable[..., None]:
        def record(connection: Any, *_args: Any) -> None:
            if not connection.connection.dbapi_connection.autocommit:
                seen.append(kind)

        return record

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", statement),
        ("begin", transaction("BEGIN")),
        ("commit", transaction("COMMIT")),
        ("rollback", transaction("ROLLBACK")),
    ]
    for name, listener in listeners:
        event.listen(sync_engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners:
            event.remove(sync_engine, name, listener)


def kinds(seen: list[str]) -> list[str]:
    """Each round trip by what it is: BEGIN, `SELECT customers`, `INSERT portal_sessions`..."""
    named: list[str] = []
    for sql in seen:
        words = sql.split()
        verb = words[0].upper()
        if verb == "SELECT":
            table = words[words.index("FROM") + 1] if "FROM" in words else "?"
            named.append(f"SELECT {table}")
        elif verb == "INSERT":
            named.append(f"INSERT {words[2]}")
        else:
            named.append(verb)
    return named


@pytest.fixture
def engine_of() -> Callable[[httpx.AsyncClient], AsyncEngine]:
    def engine(client: httpx.AsyncClient) -> AsyncEngine:
        return client.app.state.engine  # type: ignore[attr-defined, no-any-return]

    return engine


class TestRoundTripsPerSession:
    async def test_an_end_user_session_is_three_statements_and_no_transaction(
        self,
        stripe_app: httpx.AsyncClient,
        stripe_fake: StripeFake,
        mirror: Mirror,
        engine_of: Callable[[httpx.AsyncClient], AsyncEngine],
    ) -> None:
        await mirror.customer("cus_1", app_user_id="user_1")
        await mirror.configuration("bpc_default", is_default=True)
        with round_trips(engine_of(stripe_app)) as seen:
            response = await stripe_app.post("/portal-sessions", headers=user_headers("user_1"))
        assert response.status_code == 201, response.json()
        assert kinds(seen) == [
            "SELECT customers",  # the user's linked customer
            "SELECT portal_sessions",  # the rate limit
            # no configuration read: PORTAL_DEFAULT_RETURN_URL gives the return URL
            "INSERT portal_sessions",  # the record, ON CONFLICT DO NOTHING
        ]
        assert "ON CONFLICT DO NOTHING" in seen[-1]
        (row,) = await mirror.all(PortalSession)
        assert (row.id, row.customer_id, row.app_user_id) == (
            response.json()["id"],
            "cus_1",
            "user_1",
        )
        assert row.caller is not None
        assert row.caller.startswith("u:")

    async def test_an_idempotency_key_adds_only_its_lookup(
        self,
        stripe_app: httpx.AsyncClient,
        stripe_fake: StripeFake,
        mirror: Mirror,
        engine_of: Callable[[httpx.AsyncClient], AsyncEngine],
    ) -> None:
        await mirror.customer("cus_1", app_user_id="user_1")
        headers = {**user_headers("user_1"), "Idempotency-Key": "rt-1"}
        with round_trips(engine_of(stripe_app)) as first:
            created = await stripe_app.post("/portal-sessions", headers=headers)
        with round_trips(engine_of(stripe_app)) as replayed:
            again = await stripe_app.post("/portal-sessions", headers=headers)
        assert (created.status_code, again.status_code) == (201, 201)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == created.json()["id"]
        assert len(first) == 4
        assert kinds(first)[0] == "SELECT portal_sessions"  # the key's history
        # A replay skips the rate limit and writes nothing.
        assert kinds(replayed) == ["SELECT portal_sessions", "SELECT customers"]
        assert len(await mirror.all(PortalSession)) == 1

    async def test_a_backend_naming_a_customer_is_three_statements(
        self,
        stripe_app: httpx.AsyncClient,
        stripe_fake: StripeFake,
        mirror: Mirror,
        engine_of: Callable[[httpx.AsyncClient], AsyncEngine],
    ) -> None:
        await mirror.customer("cus_1")
        with round_trips(engine_of(stripe_app)) as seen:
            response = await stripe_app.post(
                "/portal-sessions", headers=backend_headers(), json={"customer_id": "cus_1"}
            )
        assert response.status_code == 201, response.json()
        assert kinds(seen) == [
            "SELECT customers",
            "SELECT portal_sessions",
            "INSERT portal_sessions",
        ]

    async def test_the_configuration_is_read_when_its_return_url_is_needed(
        self,
        stripe_client: Callable[..., Any],
        stripe_fake: StripeFake,
        mirror: Mirror,
        engine_of: Callable[[httpx.AsyncClient], AsyncEngine],
    ) -> None:
        await mirror.customer("cus_1", app_user_id="user_1")
        await mirror.configuration(
            "bpc_default", is_default=True, default_return_url="https://app.example.com/home"
        )
        async with stripe_client(portal_default_return_url=None) as client:
            with round_trips(engine_of(client)) as seen:
                response = await client.post("/portal-sessions", headers=user_headers("user_1"))
        assert response.status_code == 201, response.json()
        assert response.json()["return_url"] == "https://app.example.com/home"
        assert kinds(seen) == [
            "SELECT customers",
            "SELECT portal_sessions",
            "SELECT portal_configurations",  # the mode's default: its default_return_url
            "INSERT portal_sessions",
        ]
