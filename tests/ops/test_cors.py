"""CORS: browsers from CORS_ALLOW_ORIGINS may call the API; nobody else gets CORS headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

APP_ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
}


@pytest.mark.sqlite
class TestCors:
    async def test_preflight_from_an_allowed_origin_is_allowed(
        self, client_factory: Callable[..., Any]
    ) -> None:
        async with client_factory(cors_allow_origins=APP_ORIGIN) as client:
            response = await client.options(
                "/portal-sessions", headers={"Origin": APP_ORIGIN, **PREFLIGHT}
            )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed_headers = response.headers["access-control-allow-headers"].lower()
        for header in ("authorization", "content-type", "idempotency-key"):
            assert header in allowed_headers

    async def test_preflight_from_another_origin_gets_no_cors_headers(
        self, client_factory: Callable[..., Any]
    ) -> None:
        async with client_factory(cors_allow_origins=APP_ORIGIN) as client:
            response = await client.options(
                "/portal-sessions", headers={"Origin": "https://evil.example.com", **PREFLIGHT}
            )
        assert "access-control-allow-origin" not in response.headers
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "cors_preflight_rejected"

    async def test_simple_request_from_an_allowed_origin_exposes_the_request_id(
        self, client_factory: Callable[..., Any]
    ) -> None:
        async with client_factory(cors_allow_origins=APP_ORIGIN) as client:
            response = await client.get("/healthz", headers={"Origin": APP_ORIGIN})
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "X-Request-ID" in response.headers["access-control-expose-headers"]

    async def test_without_configured_origins_there_are_no_cors_headers(
        self, client_factory: Callable[..., Any]
    ) -> None:
        async with client_factory() as client:
            preflight = await client.options(
                "/portal-sessions", headers={"Origin": APP_ORIGIN, **PREFLIGHT}
            )
            simple = await client.get("/healthz", headers={"Origin": APP_ORIGIN})
        assert "access-control-allow-origin" not in preflight.headers
        assert "access-control-allow-origin" not in simple.headers
        assert simple.status_code == 200
