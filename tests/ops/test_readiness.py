"""/readyz: 503 when the database is unreachable or behind the code's migrations, 200 when it
is current or ahead (a rolling deploy); /healthz stays 200 throughout."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from portal_service import migrations
from portal_service.db import create_engine


def closed_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def previous_revision() -> str:
    """The revision just before the code's head ("base" while there is only one)."""
    script = ScriptDirectory.from_config(migrations.alembic_config("sqlite://"))
    (head,) = script.get_heads()
    down = script.get_revision(head).down_revision
    assert not isinstance(down, tuple), "merge revisions are not expected here"
    return down or "base"


async def execute(database_url: str, statement: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.mark.sqlite
class TestReadiness:
    async def test_unreachable_postgres_is_not_ready_but_alive(
        self, client_factory: Callable[..., Any]
    ) -> None:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_local_port()}/portal"
        async with client_factory(database_url=url) as client:
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "not_ready",
            "database": "unreachable",
            "schema": "unknown",
        }
        assert alive.status_code == 200

    async def test_unopenable_sqlite_file_is_not_ready_but_alive(
        self, client_factory: Callable[..., Any], tmp_path: Path
    ) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'portal.db'}"
        async with client_factory(database_url=url) as client:
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
        assert ready.status_code == 503
        assert ready.json()["database"] == "unreachable"
        assert alive.status_code == 200

    async def test_never_migrated_database_is_not_ready(
        self, client_factory: Callable[..., Any], scratch_database_url: str
    ) -> None:
        async with client_factory(database_url=scratch_database_url) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not_ready", "database": "ok", "schema": "empty"}

    async def test_database_behind_the_code_is_not_ready(
        self, client_factory: Callable[..., Any], scratch_database_url: str
    ) -> None:
        # Migrated, then taken back one step: alembic_version exists but is not at head.
        await migrations.upgrade_async(scratch_database_url)
        previous = previous_revision()
        await migrations.downgrade_async(scratch_database_url, previous)
        async with client_factory(database_url=scratch_database_url) as client:
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
        assert ready.status_code == 503
        expected = "empty" if previous == "base" else "behind"
        assert ready.json() == {"status": "not_ready", "database": "ok", "schema": expected}
        assert alive.status_code == 200

    async def test_database_ahead_of_the_code_is_ready(
        self, client_factory: Callable[..., Any], scratch_database_url: str
    ) -> None:
        # A newer deploy migrated the database during a rolling update: old code keeps serving.
        await migrations.upgrade_async(scratch_database_url)
        await execute(
            scratch_database_url, "UPDATE alembic_version SET version_num = 'f00dfeed9999'"
        )
        async with client_factory(database_url=scratch_database_url) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "database": "ok", "schema": "ahead"}

    async def test_current_database_is_ready(
        self, client_factory: Callable[..., Any], scratch_database_url: str
    ) -> None:
        await migrations.upgrade_async(scratch_database_url)
        async with client_factory(database_url=scratch_database_url) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["schema"] == "current"

    async def test_sqlite_writer_holding_the_lock_does_not_make_it_unready(
        self, client_factory: Callable[..., Any], tmp_path: Path
    ) -> None:
        # The probe only reads alembic_version: it must not queue for SQLite's write lock
        # (and report "unreachable" after its timeout) while a webhook is being applied.
        url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
        await migrations.upgrade_async(url)
        writer_engine = create_engine(url)
        try:
            async with writer_engine.connect() as writer:
                await writer.execute(text("DELETE FROM customers"))  # takes the lock
                async with client_factory(database_url=url) as client:
                    ready = await client.get("/readyz")
                await writer.rollback()
        finally:
            await writer_engine.dispose()
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "database": "ok", "schema": "current"}

    async def test_probes_do_not_read_the_migration_scripts_again(
        self,
        client_factory: Callable[..., Any],
        scratch_database_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # Alembic finds the code's revisions by reading and executing every script file:
        # blocking I/O that must not run on the event loop at every probe.
        await migrations.upgrade_async(scratch_database_url)
        async with client_factory(database_url=scratch_database_url) as client:
            first = await client.get("/readyz")

            def no_disk(*_args: Any, **_kwargs: Any) -> None:
                raise AssertionError("the migration scripts were read again")

            monkeypatch.setattr(ScriptDirectory, "from_config", no_disk)
            again = await client.get("/readyz")
        assert first.status_code == again.status_code == 200
        assert again.json()["schema"] == "current"
