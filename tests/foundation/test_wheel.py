"""The migrations ship inside the wheel: an installed `portal-service migrate` works from any
directory, with no source checkout around (as in the Docker image)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from portal_service import migrations

ROOT = Path(__file__).resolve().parents[2]


def find_uv() -> str:
    # `make install` bootstraps uv into .tools/; a uv on PATH will do as well.
    for candidate in (ROOT / ".tools" / "bin" / "uv", Path("/tmp/uvv/bin/uv")):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("uv")
    if found is None:
        pytest.fail("uv not found: run make install (it bootstraps uv into .tools/)")
    return found


def uv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    # Never let the test's own venv or project settings steer where uv installs.
    for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"):
        env.pop(name, None)
    result = subprocess.run(  # noqa: S603 - uv with fixed arguments
        [find_uv(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"uv {' '.join(args)} failed:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv("build", "--wheel", "--python", sys.executable, "--out-dir", str(out), str(ROOT), cwd=out)
    (built,) = out.glob("portal_service-*.whl")
    return built


@pytest.mark.slow
class TestInstalledPackage:
    def test_wheel_carries_the_migrations(self, wheel: Path) -> None:
        names = set(zipfile.ZipFile(wheel).namelist())
        assert "portal_service/alembic/env.py" in names
        assert "portal_service/alembic/script.py.mako" in names
        for version in (ROOT / "alembic" / "versions").glob("*.py"):
            assert f"portal_service/alembic/versions/{version.name}" in names
        assert not [name for name in names if "__pycache__" in name]

    def test_installed_migrate_works_from_an_unrelated_directory(
        self, wheel: Path, tmp_path: Path
    ) -> None:
        venv = tmp_path / "venv"
        uv("venv", "--quiet", "--python", sys.executable, str(venv), cwd=tmp_path)
        uv(
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            str(wheel),
            cwd=tmp_path,
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        database = tmp_path / "installed.db"
        result = subprocess.run(  # noqa: S603 - the console script we just installed
            [str(venv / "bin" / "portal-service"), "migrate"],
            cwd=elsewhere,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(tmp_path),
                "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        with sqlite3.connect(database) as connection:
            names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        assert {"stripe_events", "customers", "subscriptions", "invoices", "entitlements"} <= names
        assert {version} == migrations.code_heads()
        # The packaged copy is what it found, not this checkout's alembic/ folder.
        located = subprocess.run(  # noqa: S603 - the interpreter of the venv we just made
            [
                str(venv / "bin" / "python"),
                "-c",
                "from portal_service.migrations import script_location; print(script_location())",
            ],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert Path(located.stdout.strip()).is_relative_to(venv.resolve())
