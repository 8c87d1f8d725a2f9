"""The `portal-service` command as operators run it: a real process, a controlled environment,
and a working directory of its own (so no `.env` is read)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from portal_service import migrations
from portal_service.config import Settings
from portal_service.main import create_app

PORTAL_SERVICE = str(Path(sys.executable).with_name("portal-service"))

# A production configuration that would start; each refusal below breaks one thing in it.
PRODUCTION = {
    "ENVIRONMENT": "production",
    "DATABASE_URL": "postgresql+asyncpg://portal@127.0.0.1:1/portal",
    "STRIPE_API_KEY": "sk_test_123",
    "STRIPE_WEBHOOK_SECRETS": "whsec_one",
    "AUTH_JWT_SECRET": "a-long-enough-shared-secret-for-hs256",
}
SQLITE_URL = "sqlite+aiosqlite:///./portal.db"

REFUSALS: dict[str, tuple[dict[str, str], list[str], str]] = {
    "production-with-sqlite": (
        {**PRODUCTION, "DATABASE_URL": SQLITE_URL},
        [],
        "production needs PostgreSQL",
    ),
    "production-without-webhook-secrets": (
        {**PRODUCTION, "STRIPE_WEBHOOK_SECRETS": ""},
        [],
        "production needs STRIPE_WEBHOOK_SECRETS",
    ),
    "production-without-any-auth": (
        {**PRODUCTION, "AUTH_JWT_SECRET": ""},
        [],
        "nothing would be authenticated",
    ),
    "production-offline": (
        {k: v for k, v in PRODUCTION.items() if k != "STRIPE_API_KEY"},
        [],
        "production needs STRIPE_API_KEY",
    ),
    "notify-url-without-secret": (
        {"NOTIFY_URL": "https://app.example.com/hooks"},
        [],
        "NOTIFY_URL needs NOTIFY_SECRET",
    ),
    "notify-secret-not-standard-webhooks": (
        {"NOTIFY_URL": "https://app.example.com/hooks", "NOTIFY_SECRET": "not-a-whsec"},
        [],
        "NOTIFY_SECRET must be a Standard Webhooks secret",
    ),
    "production-notify-over-http": (
        {
            **PRODUCTION,
            "NOTIFY_URL": "http://app.example.com/hooks",
            "NOTIFY_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        },
        [],
        "production needs an https:// NOTIFY_URL",
    ),
    "jwt-secret-and-jwks": (
        {"AUTH_JWT_SECRET": "secret", "AUTH_JWKS_URL": "https://idp.example.com/jwks.json"},
        [],
        "set AUTH_JWT_SECRET or AUTH_JWKS_URL, not both",
    ),
    "workers-on-sqlite": (
        {"DATABASE_URL": SQLITE_URL},
        ["--workers", "2"],
        "--workers above 1 needs PostgreSQL",
    ),
    "default-return-url-outside-allowlist": (
        {
            "PORTAL_RETURN_URL_ALLOWLIST": "https://app.example.com/billing",
            "PORTAL_DEFAULT_RETURN_URL": "https://evil.example.com/billing",
        },
        [],
        "PORTAL_DEFAULT_RETURN_URL is not in PORTAL_RETURN_URL_ALLOWLIST",
    ),
    "invalid-rate-limit": (
        {"RATE_LIMIT_PORTAL_SESSIONS": "10/fortnight"},
        [],
        "invalid RATE_LIMIT_PORTAL_SESSIONS",
    ),
}


def base_env(home: Path, **variables: str) -> dict[str, str]:
    """Only PATH and HOME from this process: nothing the shell exports leaks into settings."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **variables}


def run(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script
        [PORTAL_SERVICE, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="class")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Every refusal case, started at once (each is a cold interpreter start) and collected."""
    processes = {}
    for case, (variables, extra_args, _reason) in REFUSALS.items():
        cwd = tmp_path_factory.mktemp(case)
        processes[case] = subprocess.Popen(  # noqa: S603 - our own console script
            # Port 0: if a refusal were missing, the server would bind somewhere harmless.
            [PORTAL_SERVICE, "serve", "--port", "0", *extra_args],
            cwd=cwd,
            env=base_env(cwd, **variables),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for case, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        results[case] = (process.returncode, stdout, stderr)
    return results


@pytest.mark.slow
class TestStartupRefusals:
    @pytest.mark.parametrize("case", list(REFUSALS))
    def test_refusal_exits_nonzero_with_one_line_before_serving(
        self, refusals: dict[str, tuple[int, str, str]], case: str
    ) -> None:
        returncode, stdout, stderr = refusals[case]
        reason = REFUSALS[case][2]
        assert returncode not in (0, None), stderr
        assert stdout == ""
        lines = stderr.splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith("portal-service: ")
        assert reason in lines[0]
        assert "Uvicorn running" not in stderr

    def test_refusals_do_not_echo_secret_values(
        self, refusals: dict[str, tuple[int, str, str]]
    ) -> None:
        for returncode, stdout, stderr in refusals.values():
            assert returncode != 0
            for secret in ("whsec_one", "sk_test_123", "a-long-enough-shared-secret"):
                assert secret not in stdout + stderr


@pytest.mark.slow
@pytest.mark.sqlite
class TestMigrateCommand:
    def test_migrate_builds_a_fresh_sqlite_file(self, tmp_path: Path) -> None:
        database = tmp_path / "fresh.db"
        result = run(
            ["migrate"],
            cwd=tmp_path,
            env=base_env(tmp_path, DATABASE_URL=f"sqlite+aiosqlite:///{database}"),
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "database at head"
        with sqlite3.connect(database) as connection:
            names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        assert {"stripe_events", "customers", "subscriptions", "portal_sessions"} <= names
        assert {version} == migrations.code_heads()

    def test_unreachable_database_fails_in_one_line(self, tmp_path: Path) -> None:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/portal"
        result = run(["migrate"], cwd=tmp_path, env=base_env(tmp_path, DATABASE_URL=url))
        assert result.returncode != 0
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("portal-service: migration failed:")


@pytest.mark.slow
@pytest.mark.sqlite
class TestOpenapiCommand:
    def test_openapi_prints_the_apps_document(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in Settings.model_fields:
            monkeypatch.delenv(name.upper(), raising=False)
        result = run(["openapi"], cwd=tmp_path, env=base_env(tmp_path))
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        assert document == create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
        assert result.stdout.endswith("}\n")

    def test_openapi_output_option_writes_the_file(self, tmp_path: Path) -> None:
        target = tmp_path / "openapi.json"
        result = run(["openapi", "--output", str(target)], cwd=tmp_path, env=base_env(tmp_path))
        assert result.returncode == 0, result.stderr
        assert json.loads(target.read_text())["info"]["title"] == "portal-service"


@pytest.mark.slow
@pytest.mark.sqlite
class TestServeCommand:
    def test_serve_after_migrate_answers_health_readiness_and_docs(self, tmp_path: Path) -> None:
        # What `make run` does: migrate, then serve on SQLite in offline mode.
        env = base_env(tmp_path, DATABASE_URL="sqlite+aiosqlite:///./served.db")
        assert run(["migrate"], cwd=tmp_path, env=env).returncode == 0
        port = free_port()
        server = subprocess.Popen(  # noqa: S603 - our own console script
            [PORTAL_SERVICE, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                assert server.poll() is None, "serve exited early"
                try:
                    healthz = httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "serve did not start listening"
                    time.sleep(0.1)
            readyz = httpx.get(f"{base}/readyz", timeout=5)
            docs = httpx.get(f"{base}/docs", timeout=5)
        finally:
            server.terminate()
            _, stderr = server.communicate(timeout=20)
        assert healthz.status_code == 200
        assert readyz.status_code == 200
        assert readyz.json()["schema"] == "current"
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit status -15).
        assert "Application shutdown complete." in stderr
