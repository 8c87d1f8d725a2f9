"""Alembic, driven from code: the migrations ship inside the package (see pyproject)."""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from portal_service.db import for_reads


def script_location() -> Path:
    # Installed wheel: portal_service/alembic; source checkout: <repo>/alembic.
    packaged = Path(__file__).resolve().parent / "alembic"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "alembic"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    config.attributes["url_from_code"] = True
    return config


@cache
def _code_revisions() -> tuple[frozenset[str], frozenset[str]]:
    """(heads, every revision) of the migrations this code ships.

    Read once per process: Alembic finds them by reading and executing every revision
    file, which must not happen on the event loop at each readiness probe.
    """
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = frozenset(script.get_heads())
    return heads, frozenset(rev.revision for rev in script.walk_revisions())


def code_heads() -> set[str]:
    return set(_code_revisions()[0])


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    # Alembic's env.py runs its own event loop; keep it off ours.
    await asyncio.to_thread(upgrade, database_url, revision)


async def downgrade_async(database_url: str, revision: str = "base") -> None:
    await asyncio.to_thread(downgrade, database_url, revision)


async def schema_state(engine: AsyncEngine) -> str:
    """`current`, `behind`, `ahead` (a newer deploy migrated it: still ready) or `empty`."""
    # A read: on SQLite it must not queue for the write lock behind a webhook being applied.
    async with for_reads(engine).connect() as connection:
        current = await connection.run_sync(
            lambda sync: set(MigrationContext.configure(sync).get_current_heads())
        )
    if not current:
        return "empty"
    heads, known = _code_revisions()
    if current == heads:
        return "current"
    if not current <= known:
        return "ahead"
    return "behind"
