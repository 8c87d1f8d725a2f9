"""The committed openapi.json is exactly what the app serves (`make openapi` regenerates it)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from portal_service.config import Settings
from portal_service.main import create_app

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"


def rendered() -> str:
    # Byte for byte what `portal-service openapi` writes.
    return json.dumps(create_app(Settings(_env_file=None)).openapi(), indent=2) + "\n"  # type: ignore[call-arg]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make openapi` runs with an empty environment; so does the comparison."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.sqlite
@pytest.mark.usefixtures("clean_env")
class TestCommittedOpenapi:
    def test_committed_openapi_json_is_current(self) -> None:
        assert COMMITTED.is_file(), "openapi.json is missing: run make openapi and commit it"
        committed = COMMITTED.read_text()
        current = rendered()
        if committed != current:
            diff = "".join(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    current.splitlines(keepends=True),
                    "openapi.json (committed)",
                    "openapi.json (app)",
                    n=2,
                )
            )
            pytest.fail(f"openapi.json is stale: run make openapi and commit it\n{diff[:4000]}")

    def test_document_describes_the_ops_routes(self) -> None:
        paths = json.loads(rendered())["paths"]
        for path in ("/healthz", "/readyz", "/metrics"):
            assert "get" in paths[path]
