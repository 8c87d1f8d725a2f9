"""scripts/test.sh and .ci/run never pass without running the suite on both databases.

Each script runs from a scratch copy of the repository layout whose `.venv/bin/pytest` (or
`make`) is a stub that records how it was called and exits with a chosen code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

STUB = """#!/usr/bin/env bash
echo "${PORTAL_TEST_BACKEND:-unset} $*" >> "$STUB_LOG"
n=$(wc -l < "$STUB_LOG")
codes=($STUB_EXIT_CODES)
exit "${codes[$((n - 1))]:-0}"
"""


def layout(tmp_path: Path, script: str, stub: str) -> Path:
    """A copy of `script` in an otherwise empty repository whose `stub` tool is the recorder."""
    copy = tmp_path / script
    copy.parent.mkdir(parents=True)
    shutil.copy2(ROOT / script, copy)
    tool = tmp_path / stub
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text(STUB)
    tool.chmod(0o755)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        python.symlink_to(sys.executable)
    return copy


def run(script: Path, tmp_path: Path, *, exit_codes: str, **env: str) -> tuple[int, list[str], str]:
    log = tmp_path / "calls.log"
    log.write_text("")
    result = subprocess.run(  # noqa: S603 - a copy of our own script
        [str(script)],
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "STUB_LOG": str(log),
            "STUB_EXIT_CODES": exit_codes,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, log.read_text().splitlines(), result.stderr


PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@pytest.mark.sqlite
class TestTestScript:
    def test_runs_postgres_then_the_sqlite_subset(self, tmp_path: Path) -> None:
        script = layout(tmp_path, "scripts/test.sh", ".venv/bin/pytest")
        code, calls, _ = run(script, tmp_path, exit_codes="0 0", TEST_DATABASE_URL=PG)
        assert code == 0
        assert calls == ["postgresql ", "sqlite -m sqlite"]

    def test_a_leftover_sqlite_backend_cannot_replace_the_postgres_run(
        self, tmp_path: Path
    ) -> None:
        script = layout(tmp_path, "scripts/test.sh", ".venv/bin/pytest")
        code, calls, _ = run(
            script,
            tmp_path,
            exit_codes="0 0",
            TEST_DATABASE_URL=PG,
            PORTAL_TEST_BACKEND="sqlite",
        )
        assert code == 0
        assert calls == ["postgresql ", "sqlite -m sqlite"]

    @pytest.mark.parametrize(
        ("exit_codes", "runs"),
        [("1", 1), ("5", 1), ("0 1", 2), ("0 5", 2)],
        ids=["pg-fails", "pg-ran-nothing", "sqlite-fails", "sqlite-ran-nothing"],
    )
    def test_a_failing_or_empty_run_fails_the_script(
        self, tmp_path: Path, exit_codes: str, runs: int
    ) -> None:
        script = layout(tmp_path, "scripts/test.sh", ".venv/bin/pytest")
        code, calls, _ = run(script, tmp_path, exit_codes=exit_codes, TEST_DATABASE_URL=PG)
        assert code == int(exit_codes.split()[-1])
        assert len(calls) == runs

    def test_a_sqlite_url_is_not_taken_for_postgres(self, tmp_path: Path) -> None:
        script = layout(tmp_path, "scripts/test.sh", ".venv/bin/pytest")
        code, calls, stderr = run(
            script, tmp_path, exit_codes="0 0", TEST_DATABASE_URL="sqlite+aiosqlite:///x.db"
        )
        assert code != 0
        assert calls == []
        assert "TEST_DATABASE_URL" in stderr


@pytest.mark.sqlite
class TestCiScript:
    @pytest.mark.parametrize(
        ("exit_codes", "expected_calls"),
        [("0 0", 2), ("2 0", 1), ("0 2", 2)],
        ids=["green", "lint-fails", "tests-fail"],
    )
    def test_fails_when_lint_or_tests_fail(
        self, tmp_path: Path, exit_codes: str, expected_calls: int
    ) -> None:
        script = layout(tmp_path, ".ci/run", "bin/make")
        path = f"{tmp_path / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        code, calls, _ = run(script, tmp_path, exit_codes=exit_codes, PATH=path)
        assert [call.split()[-1] for call in calls] == ["lint", "test"][:expected_calls]
        assert (code == 0) is (exit_codes == "0 0")
