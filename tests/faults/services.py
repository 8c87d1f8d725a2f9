"""Real `portal-service serve` processes on free loopback ports, for the fault tests, and an
apply log that shows whether any event was ever written twice to an object."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from support import ADMIN_KEY, BACKEND_KEY, JWT_SECRET, WEBHOOK_SECRET

CLI = str(Path(sys.executable).with_name("portal-service"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    # Built from scratch so nothing of the developer's environment (a Stripe key) leaks in.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "ADMIN_API_KEYS": ADMIN_KEY,
        "BACKEND_API_KEYS": BACKEND_KEY,
        "AUTH_JWT_SECRET": JWT_SECRET,
        "PORTAL_RETURN_URL_ALLOWLIST": "https://app.example.com",
        "PORTAL_DEFAULT_RETURN_URL": "https://app.example.com/account",
        "LOG_LEVEL": "WARNING",
    }
    env.update({key.upper(): value for key, value in extra.items()})
    return env


class Service:
    """One `portal-service serve`; output goes to a log file read back on failure."""

    def __init__(self, database_url: str, tmp_path: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = service_env(database_url, **env)
        self.cwd = tmp_path
        self.log = tmp_path / f"serve-{self.port}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Service:
        with self.log.open("ab") as sink:
            self.process = await asyncio.create_subprocess_exec(
                CLI,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
                env=self.env,
                cwd=self.cwd,
                stdout=sink,
                stderr=sink,
            )
        async with httpx.AsyncClient(timeout=2) as http:
            for _ in range(300):
                if self.process.returncode is not None:
                    pytest.fail(f"{self.url} exited: {self.output()[-2000:]}")
                try:
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail(f"{self.url} never became healthy: {self.output()[-2000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, seconds: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), seconds)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), timeout=10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@asynccontextmanager
async def serving(
    database_url: str, tmp_path: Path, *args: str, **env: str
) -> AsyncIterator[Service]:
    service = await Service(database_url, tmp_path, *args, **env).start()
    try:
        yield service
    finally:
        await service.stop()


async def migrate(database_url: str, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        CLI,
        "migrate",
        env=service_env(database_url),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, output.decode()


APPLY_LOG_TABLES = ("subscriptions", "customers")


@asynccontextmanager
async def apply_log(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """A trigger recording (object, event) for every write of a mirrored row, in the
    writing transaction (so a rolled-back apply leaves nothing): an event applied twice
    to an object leaves two entries."""
    async with engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE test_apply_log (object_id text, event_id text)")
        )
        await connection.execute(
            text(
                "CREATE FUNCTION test_log_apply() RETURNS trigger AS $$ BEGIN "
                "INSERT INTO test_apply_log VALUES (NEW.id, NEW.source_event_id); "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        for table in APPLY_LOG_TABLES:
            await connection.execute(
                text(
                    f"CREATE TRIGGER test_log_apply AFTER INSERT OR UPDATE ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION test_log_apply()"
                )
            )
    try:
        yield engine
    finally:
        async with engine.begin() as connection:
            for table in APPLY_LOG_TABLES:
                await connection.execute(text(f"DROP TRIGGER IF EXISTS test_log_apply ON {table}"))
            await connection.execute(text("DROP FUNCTION IF EXISTS test_log_apply()"))
            await connection.execute(text("DROP TABLE IF EXISTS test_apply_log"))


async def double_applies(engine: AsyncEngine) -> list[Any]:
    """(object, event, count) for every event written more than once to one object."""
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT object_id, event_id, count(*) AS n FROM test_apply_log "
                "GROUP BY object_id, event_id HAVING count(*) > 1"
            )
        )
        return list(result.all())


async def applied_events(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT DISTINCT event_id FROM test_apply_log"))
        return {row[0] for row in result.all()}
