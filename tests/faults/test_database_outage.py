"""PostgreSQL unreachable under a real `portal-service serve`: webhooks answer 5xx and
acknowledge nothing they did not store, /readyz is 503 (/healthz stays 200), and the same
process recovers without a restart once the database is back.

The outage is made on this test's own scratch database only (the server is shared):
new connections are refused (ALLOW_CONNECTIONS false) and its existing backends are
terminated, filtered by datname."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conftest import DEFAULT_PG_URL
from faults.services import migrate, serving
from mirror.conftest import Rows
from mirror.stripe_payloads import subscription
from portal_service.db import create_engine
from portal_service.mirror.tables import StripeEvent, Subscription
from support import make_event, signed_headers

T0 = 1_760_000_000


class Outage:
    def __init__(self, name: str) -> None:
        base = os.environ.get("TEST_DATABASE_URL") or DEFAULT_PG_URL
        admin = make_url(base).set(database="postgres").render_as_string(hide_password=False)
        self.engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        self.name = name

    async def begin(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.name},
            )

    async def end(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))


@pytest.fixture
async def outage(scratch_database_url: str) -> AsyncIterator[Outage]:
    name = make_url(scratch_database_url).database
    assert name is not None
    assert name.startswith("portal_scratch_")  # never any other database
    controller = Outage(name)
    try:
        yield controller
    finally:
        await controller.end()
        await controller.engine.dispose()


@pytest.fixture
async def scratch_engine(scratch_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(scratch_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def post(http: httpx.AsyncClient, url: str, event: dict[str, Any]) -> httpx.Response:
    body = json.dumps(event).encode()
    return await http.post(f"{url}/webhooks", content=body, headers=signed_headers(body))


def version(v: int) -> dict[str, Any]:
    return make_event(
        "customer.subscription.updated",
        subscription("sub_outage", metadata={"v": str(v)}),
        created=T0 + v,
    )


@pytest.mark.slow
class TestDatabaseOutage:
    async def test_outage_answers_5xx_stores_nothing_half_and_recovers_without_restart(
        self,
        scratch_database_url: str,
        scratch_engine: AsyncEngine,
        outage: Outage,
        tmp_path: Path,
    ) -> None:
        await migrate(scratch_database_url, tmp_path)
        rows = Rows(scratch_engine)
        before, during, after = version(1), [version(2), version(3)], version(4)
        async with (
            serving(scratch_database_url, tmp_path) as service,
            httpx.AsyncClient(timeout=30) as http,
        ):
            assert (await post(http, service.url, before)).json()["status"] == "processed"
            assert (await http.get(f"{service.url}/readyz")).status_code == 200

            await outage.begin()
            await scratch_engine.dispose()  # our own pooled connections were terminated too
            answers = [await post(http, service.url, event) for event in during]
            ready = await http.get(f"{service.url}/readyz")
            alive = await http.get(f"{service.url}/healthz")
            assert [a.status_code >= 500 for a in answers] == [True, True], [
                a.text for a in answers
            ]
            for answer in answers:
                assert answer.headers["content-type"] == "application/problem+json"
                assert "received" not in answer.json()
            assert (ready.status_code, ready.json()["database"]) == (503, "unreachable")
            assert alive.status_code == 200

            await outage.end()
            # The same process, no restart: ready again, and Stripe's redeliveries apply.
            for _ in range(100):
                if (await http.get(f"{service.url}/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the service did not become ready after the outage")
            # What was answered 5xx was not stored: nothing to deduplicate it against.
            assert {e.id for e in await rows.all(StripeEvent)} == {before["id"]}
            redelivered = [await post(http, service.url, event) for event in [*during, after]]
            assert [r.json()["status"] for r in redelivered] == ["processed"] * 3
        recorded = await rows.all(StripeEvent)
        assert sorted(e.id for e in recorded) == sorted(e["id"] for e in [before, *during, after])
        assert {(e.status, e.attempts) for e in recorded} == {("processed", 1)}
        row = await rows.get(Subscription, "sub_outage")
        assert (row.raw["metadata"], row.source_event_id) == ({"v": "4"}, after["id"])
