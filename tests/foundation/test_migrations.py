"""Alembic migrations: up, down and up again on this run's backend (PostgreSQL in the full run,
SQLite in the subset), and the models agree with what the migrations build."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

import portal_service.main  # noqa: F401  (see MODEL_TABLES)
from portal_service import migrations
from portal_service.db import create_engine

# The app imports every router and through them every table module, so the metadata holds
# each table the running service uses, not only those alembic/env.py happens to import.
MODEL_TABLES = set(SQLModel.metadata.tables)


def schema(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    names = set(inspector.get_table_names())
    return {
        "tables": names,
        "indexes": {
            index["name"] for name in names & MODEL_TABLES for index in inspector.get_indexes(name)
        },
        "version": set(MigrationContext.configure(connection).get_current_heads()),
    }


async def read_schema(database_url: str) -> dict[str, Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(schema)
    finally:
        await engine.dispose()


def model_indexes() -> set[str]:
    return {
        str(index.name) for table in SQLModel.metadata.tables.values() for index in table.indexes
    }


@pytest.mark.sqlite
class TestMigrationsUpAndDown:
    async def test_upgrade_builds_every_table_and_index(self, scratch_database_url: str) -> None:
        await migrations.upgrade_async(scratch_database_url)
        state = await read_schema(scratch_database_url)
        assert state["tables"] >= MODEL_TABLES
        assert model_indexes() <= state["indexes"]
        assert state["version"] == migrations.code_heads()

    async def test_downgrade_to_base_removes_every_table(self, scratch_database_url: str) -> None:
        await migrations.upgrade_async(scratch_database_url)
        await migrations.downgrade_async(scratch_database_url, "base")
        state = await read_schema(scratch_database_url)
        assert state["tables"] & MODEL_TABLES == set()
        assert state["version"] == set()

    async def test_upgrade_after_downgrade_rebuilds_the_same_schema(
        self, scratch_database_url: str
    ) -> None:
        await migrations.upgrade_async(scratch_database_url)
        first = await read_schema(scratch_database_url)
        await migrations.downgrade_async(scratch_database_url, "base")
        await migrations.upgrade_async(scratch_database_url)
        assert await read_schema(scratch_database_url) == first


@pytest.mark.sqlite
class TestModelsMatchMigrations:
    async def test_autogenerate_finds_no_difference(self, engine: AsyncEngine) -> None:
        def compare(connection: Connection) -> list[Any]:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, SQLModel.metadata))

        async with engine.connect() as connection:
            diff = await connection.run_sync(compare)
        assert diff == [], "models and migrations differ: run make migration m='...'"
