"""Test fixtures: a private database per run (PostgreSQL, or SQLite for the `sqlite` subset),
apps built with test settings, signed webhooks and end-user tokens.

PORTAL_TEST_BACKEND=sqlite runs only tests marked `sqlite`, against a temporary SQLite file.
Otherwise TEST_DATABASE_URL (default: PostgreSQL on 127.0.0.1:5432) is used to create a
throwaway database, migrated with Alembic and dropped afterwards. Never skipped silently.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlmodel import SQLModel

from portal_service import migrations
from portal_service.config import Settings
from portal_service.db import create_engine, create_sessionmaker
from portal_service.gateway import Gateway
from portal_service.main import create_app
from support import ADMIN_KEY, BACKEND_KEY, JWT_SECRET, WEBHOOK_SECRET

BACKEND = os.environ.get("PORTAL_TEST_BACKEND", "postgresql")
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BACKEND != "sqlite":
        return
    selected = [item for item in items if item.get_closest_marker("sqlite")]
    deselected = [item for item in items if not item.get_closest_marker("sqlite")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected


def _admin_url(url: str) -> str:
    return make_url(url).set(database="postgres").render_as_string(hide_password=False)


async def _create_pg_database(base_url: str, name: str) -> str:
    engine = create_async_engine(_admin_url(base_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(base_url: str, name: str) -> None:
    engine = create_async_engine(_admin_url(base_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated database for this test run."""
    if BACKEND == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "portal-test.db"
        url = f"sqlite+aiosqlite:///{path}"
        migrations.upgrade(url)
        yield url
        return
    base_url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_PG_URL
    name = f"portal_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        url = asyncio.run(_create_pg_database(base_url, name))
    except OSError as exc:  # never skip: a missing database is a failure
        pytest.exit(f"PostgreSQL is not reachable at {base_url}: {exc}", returncode=3)
    try:
        migrations.upgrade(url)
        yield url
    finally:
        asyncio.run(_drop_pg_database(base_url, name))


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


async def truncate_all(engine: AsyncEngine) -> None:
    names = [table.name for table in SQLModel.metadata.sorted_tables]
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        else:
            for name in reversed(names):
                await connection.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The test database, emptied before the test."""
    engine = create_engine(database_url)
    await truncate_all(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session on the test database, for arranging rows and checking results."""
    async with create_sessionmaker(engine)() as session:
        yield session


def make_settings(database_url: str, /, **overrides: Any) -> Settings:
    # Positional-only, so `database_url=` in overrides points an app at another database.
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "stripe_webhook_secrets": WEBHOOK_SECRET,
        "auth_jwt_secret": JWT_SECRET,
        "backend_api_keys": BACKEND_KEY,
        "admin_api_keys": ADMIN_KEY,
        "portal_return_url_allowlist": "https://app.example.com",
        "portal_default_return_url": "https://app.example.com/account",
        "log_format": "json",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings_factory(database_url: str) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        return make_settings(database_url, **overrides)

    return factory


@asynccontextmanager
async def running_client(
    settings: Settings, *, gateway: Gateway | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on an app whose lifespan runs for the duration of the block."""
    app = create_app(settings, gateway=gateway)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def client_factory(
    engine: AsyncEngine, settings_factory: Callable[..., Settings]
) -> Callable[..., Any]:
    """`async with client_factory(stripe_api_key=..., ...) as client:` for custom settings."""

    def factory(*, gateway: Gateway | None = None, **overrides: Any) -> Any:
        return running_client(settings_factory(**overrides), gateway=gateway)

    return factory


@pytest.fixture
async def client(
    engine: AsyncEngine, settings_factory: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an offline-mode app (no Stripe key) with the test database."""
    async with running_client(settings_factory()) as client:
        yield client


@pytest.fixture
async def scratch_database_url(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """An empty, unmigrated database of this run's backend, dropped afterwards: for tests
    that move the schema up and down or stamp odd revisions without touching `database_url`."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('scratch') / 'scratch.db'}"
        return
    base_url = os.environ.get("TEST_DATABASE_URL") or DEFAULT_PG_URL
    name = f"portal_scratch_{os.getpid()}_{secrets.token_hex(3)}"
    url = await _create_pg_database(base_url, name)
    try:
        yield url
    finally:
        await _drop_pg_database(base_url, name)
