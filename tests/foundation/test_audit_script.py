"""scripts/audit_deps.py's fallback verdict: a known vulnerability fails, a package it could
not audit is named and never counted as clean, no data at all is a failure, not a pass."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit_deps.py"


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def project(version: str, *vulns: dict[str, Any]) -> dict[str, Any]:
    return {"info": {"version": version}, "vulnerabilities": list(vulns)}


@pytest.mark.sqlite
class TestAuditFallback:
    def test_clean_newest_releases_pass(self, audit: ModuleType) -> None:
        code, lines = audit.evaluate({"a": "1.0"}, {"a": project("1.0")})
        assert code == 0
        assert lines[-1].startswith("audited 1 of 1 locked packages")

    def test_a_known_vulnerability_fails(self, audit: ModuleType) -> None:
        vuln = {"id": "GHSA-xxxx", "fixed_in": ["1.1"], "withdrawn": None}
        code, lines = audit.evaluate(
            {"a": "1.0", "b": "2.0"}, {"a": project("1.0", vuln), "b": project("2.0")}
        )
        assert code == 1
        assert "VULNERABLE a 1.0: GHSA-xxxx (fixed in 1.1)" in lines

    def test_a_withdrawn_advisory_does_not_fail(self, audit: ModuleType) -> None:
        vuln = {"id": "PYSEC-1", "withdrawn": "2026-01-01T00:00:00Z"}
        assert audit.evaluate({"a": "1.0"}, {"a": project("1.0", vuln)})[0] == 0

    def test_a_package_below_its_newest_release_is_named_not_audited(
        self, audit: ModuleType
    ) -> None:
        code, lines = audit.evaluate(
            {"a": "1.0", "old": "0.9"}, {"a": project("1.0"), "old": project("1.0")}
        )
        assert code == 0
        assert any(
            line.startswith("NOT AUDITED (1") and "old 0.9 (newest 1.0)" in line for line in lines
        )
        assert lines[-1].startswith("audited 1 of 2")

    def test_no_data_at_all_is_a_failure(self, audit: ModuleType) -> None:
        code, lines = audit.evaluate({"a": "1.0"}, {"a": None})
        assert code == 2
        assert "could not run" in lines[-1]

    def test_pins_are_read_from_the_exported_lock(self, audit: ModuleType, tmp_path: Path) -> None:
        exported = tmp_path / "requirements.txt"
        exported.write_text(
            "# via uv\nStripe==16.1.0\n    # via portal-service\n"
            'uvloop==0.23.0 ; sys_platform != "win32"\n'
        )
        assert audit.pins_of(exported) == {"stripe": "16.1.0", "uvloop": "0.23.0"}
