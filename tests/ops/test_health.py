"""Liveness, readiness and the problem+json shape of unknown routes."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.sqlite
class TestHealth:
    async def test_healthz_answers_ok_with_request_id(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz", headers={"X-Request-ID": "req-abc_1"})
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert response.headers["x-request-id"] == "req-abc_1"

    async def test_readyz_is_ready_on_a_migrated_database(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "database": "ok", "schema": "current"}

    async def test_unknown_route_is_problem_json(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/no-such-route")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"
        assert len(response.headers["x-request-id"]) == 32
