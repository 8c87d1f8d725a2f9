"""Fixtures of the mirror tests: an app whose gateway is the real StripeGateway with Stripe
mocked at its HTTP boundary, readers that see the database as it is now, and a DB-level
fault to make an apply fail for real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import respx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, select

from portal_service.db import create_sessionmaker
from portal_service.mirror.tables import StripeEvent

STRIPE_API = "https://api.stripe.com"
STRIPE_KEY = "sk_test_123"


@pytest.fixture
def stripe_mock() -> Iterator[respx.MockRouter]:
    """Stripe's API at the SDK's httpx transport; any call not routed here fails the test."""
    with respx.mock(base_url=STRIPE_API, assert_all_called=False) as router:
        yield router


@pytest.fixture
def stripe_client(
    client_factory: Callable[..., Any], stripe_mock: respx.MockRouter
) -> Callable[..., Any]:
    """`async with stripe_client(**settings) as client:` an app talking to the mocked Stripe."""

    def factory(**overrides: Any) -> Any:
        values = {"stripe_api_key": STRIPE_KEY, "stripe_max_network_retries": 0, **overrides}
        return client_factory(**values)

    return factory


class Rows:
    """Reads with a fresh session each time, so a test sees what the app committed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessionmaker = create_sessionmaker(engine)

    async def get(self, model: type[SQLModel], object_id: str) -> Any:
        async with self._sessionmaker() as session:
            return await session.get(model, object_id)

    async def event(self, event_id: str) -> StripeEvent:
        row = await self.get(StripeEvent, event_id)
        assert row is not None, f"event {event_id} was not recorded"
        return row  # type: ignore[no-any-return]

    async def all(self, model: type[SQLModel], **where: Any) -> list[Any]:
        async with self._sessionmaker() as session:
            query = select(model)
            for name, value in where.items():
                query = query.where(getattr(model, name) == value)
            return list((await session.execute(query)).scalars().all())

    async def count(self, model: type[SQLModel]) -> int:
        return len(await self.all(model))


@pytest.fixture
def rows(engine: AsyncEngine) -> Rows:
    return Rows(engine)


@pytest.fixture
def refuse_subscription_status(engine: AsyncEngine) -> Callable[[str], Any]:
    """`async with refuse_subscription_status("unpaid"):` a trigger makes the database
    refuse to write a subscription in that status: a real fault inside the apply."""

    @asynccontextmanager
    async def refuse(status: str) -> AsyncIterator[None]:
        postgres = engine.dialect.name == "postgresql"
        async with engine.begin() as connection:
            if postgres:
                await connection.execute(
                    text(
                        "CREATE FUNCTION test_refuse_status() RETURNS trigger AS $$ BEGIN "
                        f"IF NEW.status = '{status}' THEN RAISE EXCEPTION 'refused by test trigger'; "
                        "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                    )
                )
                await connection.execute(
                    text(
                        "CREATE TRIGGER test_refuse_status BEFORE INSERT OR UPDATE ON subscriptions "
                        "FOR EACH ROW EXECUTE FUNCTION test_refuse_status()"
                    )
                )
            else:
                for operation in ("INSERT", "UPDATE"):
                    await connection.execute(
                        text(
                            f"CREATE TRIGGER test_refuse_status_{operation.lower()} BEFORE "
                            f"{operation} ON subscriptions WHEN NEW.status = '{status}' "
                            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
                        )
                    )
        try:
            yield
        finally:
            async with engine.begin() as connection:
                if postgres:
                    await connection.execute(
                        text("DROP TRIGGER IF EXISTS test_refuse_status ON subscriptions")
                    )
                    await connection.execute(text("DROP FUNCTION IF EXISTS test_refuse_status()"))
                else:
                    for operation in ("insert", "update"):
                        await connection.execute(
                            text(f"DROP TRIGGER IF EXISTS test_refuse_status_{operation}")
                        )

    return refuse
