"""`portal-service webhook-endpoint check|create --url URL [--connect]`: Stripe's endpoint
compared with what this service handles (exit 0 fine, 1 mismatch, 2 error). Stripe's
/v1/webhook_endpoints is faked with respx at the SDK's httpx transport."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
import stripe
import typer
from typer.testing import CliRunner

from portal_service.mirror.endpoints import HANDLED_EVENTS
from portal_service.mirror.endpoints_cli import webhook_endpoint_app
from portal_service.mirror.projections import EVENT_ROUTES

URL = "https://billing.example.com/webhooks"
STRIPE_KEY = "sk_test_123"
VERSION = stripe.api_version


def endpoint(endpoint_id: str = "we_1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": endpoint_id,
        "object": "webhook_endpoint",
        "api_version": VERSION,
        "application": None,
        "created": 1_760_000_000,
        "description": "portal-service",
        "enabled_events": list(HANDLED_EVENTS),
        "livemode": False,
        "metadata": {},
        "secret": None,
        "status": "enabled",
        "url": URL,
    }
    body.update(overrides)
    return body


def listing(*endpoints: dict[str, Any]) -> httpx.Response:
    body = {"object": "list", "data": list(endpoints), "has_more": False, "url": "/v1/we"}
    return httpx.Response(200, json=body)


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from portal_service.config import get_settings

    monkeypatch.chdir(tmp_path)
    for name, value in {
        "ENVIRONMENT": "test",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    app = typer.Typer()
    app.add_typer(webhook_endpoint_app)
    yield lambda *args: CliRunner().invoke(app, ["webhook-endpoint", *args])
    get_settings.cache_clear()


class TestCheck:
    def test_handled_events_are_exactly_the_routed_types(self) -> None:
        assert set(HANDLED_EVENTS) == set(EVENT_ROUTES)

    def test_a_matching_endpoint_is_fine(
        self, stripe_mock: respx.MockRouter, invoke: Callable[..., Any]
    ) -> None:
        other = endpoint("we_other", url="https://elsewhere.example.com/hook", status="disabled")
        route = stripe_mock.get("/v1/webhook_endpoints").mock(
            return_value=listing(other, endpoint())
        )
        result = invoke("check", "--url", URL)
        assert result.exit_code == 0, result.output
        assert "we_1: ok" in result.output
        assert "we_other" not in result.output  # another URL is not this service's
        assert route.calls.last.request.headers["Authorization"] == f"Bearer {STRIPE_KEY}"

    def test_wrong_version_and_missing_type_are_a_mismatch(
        self, stripe_mock: respx.MockRouter, invoke: Callable[..., Any]
    ) -> None:
        events = [e for e in HANDLED_EVENTS if e != "invoice.paid"] + ["charge.succeeded"]
        stripe_mock.get("/v1/webhook_endpoints").mock(
            return_value=listing(endpoint(api_version="2024-06-20", enabled_events=events))
        )
        result = invoke("check", "--url", URL)
        assert result.exit_code == 1, result.output
        assert f"we_1: api_version 2024-06-20, expected {VERSION}" in result.output
        assert "we_1: missing event types: invoice.paid" in result.output
        assert "we_1: extra event types: charge.succeeded" in result.output

    def test_disabled_endpoint_and_wrong_scope_are_a_mismatch(
        self, stripe_mock: respx.MockRouter, invoke: Callable[..., Any]
    ) -> None:
        stripe_mock.get("/v1/webhook_endpoints").mock(
            return_value=listing(
                endpoint(status="disabled", metadata={"portal_service_scope": "account"})
            )
        )
        result = invoke("check", "--url", URL, "--connect")
        assert result.exit_code == 1
        assert "we_1: disabled" in result.output
        assert "we_1: scope account, expected connect" in result.output

    def test_no_endpoint_at_the_url_is_a_mismatch(
        self, stripe_mock: respx.MockRouter, invoke: Callable[..., Any]
    ) -> None:
        stripe_mock.get("/v1/webhook_endpoints").mock(return_value=listing())
        result = invoke("check", "--url", URL)
        assert result.exit_code == 1
        assert "no webhook endpoint points at" in result.output

    def test_stripe_refusing_is_an_error(
        self, stripe_mock: respx.MockRouter, invoke: Callable[..., Any]
    ) -> None:
        stripe_mock.get("/v1/webhook_endpoints").respond(
            401, json={"error": {"type": "invalid_request_error", "message": "bad key"}}
        )
        result = invoke("check", "--url", URL)
        assert result.exit_code == 2
        assert "stripe_error" in result.output

    def test_a_bad_url_is_an_error(self, invoke: Callable[..., Any]) -> None:
        assert invoke("check", "--url", "ftp://example.com/x").exit_code == 2


class TestCreate:
    def test_creates_the_endpoint_and_prints_its_secret_once(
        self, stripe_mock: respx.MockRouter, invoke: Callable[..., Any]
    ) -> None:
        stripe_mock.get("/v1/webhook_endpoints").mock(return_value=listing())
        created = stripe_mock.post("/v1/webhook_endpoints").respond(
            200, json=endpoint("we_new", secret="whsec_created_123")
        )
        result = invoke("create", "--url", URL, "--connect")
        assert result.exit_code == 0, result.output
        assert "created we_new" in result.output
        assert result.output.count("whsec_created_123") == 1
        request = created.calls.last.request
        form = parse_qs(request.content.decode())
        assert form["url"] == [URL]
        assert form["api_version"] == [VERSION]
        assert form["connect"] == ["true"]
        # The SDK sends a list as enabled_events[0]=..., enabled_events[1]=...
        sent_events = [v for k, vs in form.items() if k.startswith("enabled_events[") for v in vs]
        assert sorted(sent_events) == sorted(HANDLED_EVENTS)
        assert request.headers["Idempotency-Key"].startswith("portal-service-webhook-endpoint-")

    def test_an_existing_endpoint_is_not_duplicated(
        self, stripe_mock: respx.MockRouter, invoke: Callable[..., Any]
    ) -> None:
        stripe_mock.get("/v1/webhook_endpoints").mock(return_value=listing(endpoint()))
        created = stripe_mock.post("/v1/webhook_endpoints")
        result = invoke("create", "--url", URL)
        assert result.exit_code == 2
        assert "already points at" in result.output
        assert not created.called
