"""Security headers on every response: JSON, problem+json, HTML, a 500 and a route's own policy."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from portal_service.config import Settings
from portal_service.main import create_app
from support import user_headers

BASE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "strict-transport-security": "max-age=63072000; includeSubDomains",
}


def assert_secured(response: httpx.Response, csp: str) -> None:
    for name, value in BASE.items():
        assert response.headers.get_list(name) == [value], name
    assert response.headers.get_list("content-security-policy") == [csp]


@pytest.mark.sqlite
class TestSecurityHeaders:
    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("GET", "/healthz", 200),
            ("GET", "/me", 401),
            ("GET", "/no-such-route", 404),
            ("DELETE", "/healthz", 405),
            ("POST", "/webhooks", 400),
            ("GET", "/openapi.json", 200),
            ("GET", "/metrics", 200),
        ],
    )
    async def test_api_responses_may_load_nothing_and_never_be_framed(
        self, client: httpx.AsyncClient, method: str, path: str, status: int
    ) -> None:
        response = await client.request(method, path)
        assert response.status_code == status
        assert_secured(response, "default-src 'none'; frame-ancestors 'none'")

    async def test_docs_page_keeps_its_scripts_but_cannot_be_framed(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/docs")
        assert response.headers["content-type"].startswith("text/html")
        assert_secured(response, "frame-ancestors 'none'")

    async def test_a_routes_own_policy_wins_and_is_not_duplicated(
        self, client: httpx.AsyncClient
    ) -> None:
        created = await client.post("/portal-sessions", headers=user_headers("user_h"))
        page = await client.get(created.json()["url"])
        assert page.status_code == 200
        (csp,) = page.headers.get_list("content-security-policy")
        assert csp.startswith("default-src 'none'; style-src 'unsafe-inline'")
        assert page.headers.get_list("x-frame-options") == ["DENY"]
        assert page.headers.get_list("strict-transport-security") == [
            BASE["strict-transport-security"]
        ]

    async def test_an_unhandled_error_is_secured_too(
        self, settings_factory: Callable[..., Settings]
    ) -> None:
        app = create_app(settings_factory())

        @app.get("/test-only/boom")
        async def boom() -> None:
            raise RuntimeError("boom")

        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/test-only/boom")
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert_secured(response, "default-src 'none'; frame-ancestors 'none'")
