"""The OpenAPI document describes the mirror's routes, their bodies and their problems."""

from __future__ import annotations

from typing import Any

import pytest

from portal_service.config import Settings
from portal_service.main import create_app

ROUTES: dict[tuple[str, str], tuple[str, dict[int, set[str]]]] = {
    ("post", "/webhooks"): (
        "WebhookAck",
        {
            400: {"invalid_signature", "invalid_payload"},
            422: {"invalid_request"},
            500: {"apply_failed", "event_in_progress"},
            503: {"webhooks_not_configured"},
        },
    ),
    ("get", "/admin/events"): (
        "EventPage",
        {401: {"unauthenticated"}, 403: {"forbidden"}, 422: {"invalid_request"}},
    ),
    ("post", "/admin/events/{event_id}/replay"): (
        "ReplayResult",
        {
            401: {"unauthenticated"},
            403: {"forbidden"},
            404: {"event_not_found"},
            422: {"invalid_request"},
            500: {"apply_failed"},
        },
    ),
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    settings = Settings(_env_file=None, environment="test")  # type: ignore[call-arg]
    return create_app(settings).openapi()


@pytest.mark.sqlite
class TestMirrorOpenApi:
    @pytest.mark.parametrize("route", list(ROUTES))
    def test_success_names_its_response_model(
        self, spec: dict[str, Any], route: tuple[str, str]
    ) -> None:
        method, path = route
        content = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        assert content["schema"] == {"$ref": f"#/components/schemas/{ROUTES[route][0]}"}

    @pytest.mark.parametrize("route", list(ROUTES))
    def test_every_error_is_a_documented_problem(
        self, spec: dict[str, Any], route: tuple[str, str]
    ) -> None:
        method, path = route
        responses = spec["paths"][path][method]["responses"]
        expected = ROUTES[route][1]
        assert {int(s) for s in responses if s != "200"} == set(expected)
        for status, codes in expected.items():
            documented = responses[str(status)]
            assert {f"`{code}`" for code in codes} == set(documented["description"].split(", "))
            assert "application/problem+json" in documented["content"]

    def test_webhook_body_is_raw_json_and_signature_header_is_documented(
        self, spec: dict[str, Any]
    ) -> None:
        operation = spec["paths"]["/webhooks"]["post"]
        assert "application/json" in operation["requestBody"]["content"]
        assert [p["name"] for p in operation["parameters"]] == ["stripe-signature"]
