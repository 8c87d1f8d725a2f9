"""`portal-service demo-data`: development and offline mode only, creates the demo once (or
anew with --reset), and prints a request whose token the served app accepts."""

from __future__ import annotations

import os
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

BIN = Path(sys.executable).parent


def _run(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own entry point
        [str(BIN / "portal-service"), *args],
        cwd=tmp,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp),
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'demo.db'}",
            "LOG_LEVEL": "WARNING",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.sqlite
class TestDemoDataCommand:
    def test_creates_the_demo_once_and_prints_a_working_request(self, tmp_path: Path) -> None:
        assert _run(tmp_path, "migrate").returncode == 0
        first = _run(tmp_path, "demo-data", "--service-url", "http://127.0.0.1:8123")
        assert first.returncode == 0, first.stderr
        assert "demo data created: customer cus_offline_" in first.stdout
        assert "API docs: http://127.0.0.1:8123/docs" in first.stdout
        (curl,) = [line for line in first.stdout.splitlines() if "curl" in line]
        words = shlex.split(curl)
        assert words[4] == "http://127.0.0.1:8123/portal-sessions"
        token = words[6].removeprefix("Authorization: Bearer ")
        assert jwt.get_unverified_header(token)["alg"] == "HS256"
        assert jwt.decode(token, options={"verify_signature": False})["sub"] == "demo-user"

        again = _run(tmp_path, "demo-data")
        assert again.returncode == 0
        assert "demo data already present" in again.stdout
        second = shlex.split(next(x for x in again.stdout.splitlines() if "curl" in x))[6]
        # Both tokens are signed with the one generated secret the database keeps.
        with sqlite3.connect(tmp_path / "demo.db") as connection:
            (secret,) = connection.execute(
                "SELECT value FROM offline_secrets WHERE name = 'auth_jwt_secret'"
            ).fetchone()
        for signed in (token, second.removeprefix("Authorization: Bearer ")):
            assert jwt.decode(signed, secret, algorithms=["HS256"])["sub"] == "demo-user"

        # `sync` reads "Stripe": in offline mode, the stand-in's objects.
        synced = _run(tmp_path, "sync")
        assert synced.returncode == 0, synced.stderr
        assert "subscriptions: 1 (applied 1)" in synced.stdout + synced.stderr
        assert "invoices: 2 (applied 2)" in synced.stdout + synced.stderr

        reset = _run(tmp_path, "demo-data", "--reset")
        assert reset.returncode == 0
        assert "demo data created" in reset.stdout

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            ({"ENVIRONMENT": "test"}, "ENVIRONMENT=development only"),
            ({"STRIPE_API_KEY": "sk_test_123"}, "needs offline mode"),
            (
                {
                    "ENVIRONMENT": "production",
                    "DATABASE_URL": "postgresql+asyncpg://x@127.0.0.1:1/x",
                    "STRIPE_WEBHOOK_SECRETS": "whsec_x",
                    "BACKEND_API_KEYS": "k",
                },
                "offline mode is for development",
            ),
        ],
        ids=["test-environment", "stripe-key", "production"],
    )
    def test_refused_outside_offline_development(
        self, tmp_path: Path, env: dict[str, str], message: str
    ) -> None:
        result = _run(tmp_path, "demo-data", **env)
        assert result.returncode == 2
        assert message in result.stderr
        assert not (tmp_path / "demo.db").exists()
