"""Hostile sizes in-process: request bodies over the JSON routes' cap (413, declared or
streamed), JSON nested deeper than the webhook limit (400, nothing recorded), and deep
JSON on the JSON routes (a 4xx, never a 500)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from mirror.stripe_payloads import subscription
from portal_service.main import JSON_MAX_BODY_BYTES
from portal_service.mirror.events import MAX_JSON_DEPTH
from support import backend_headers, make_event, signed_headers, user_headers


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_event(depth: int) -> bytes:
    """A subscription event with an unknown field nested `depth` levels below the event."""
    # event > data > object > x_deep is three levels; the array adds the rest.
    obj = json.dumps(subscription("sub_deep"))[:-1] + f', "x_deep": {deep(depth - 3)}}}'
    event = json.dumps(make_event("customer.subscription.updated", {}))
    return event.replace('"data": {"object": {}}', f'"data": {{"object": {obj}}}').encode()


@pytest.mark.sqlite
class TestBodySize:
    @pytest.mark.parametrize(
        ("method", "path", "headers"),
        [
            ("POST", "/portal-sessions", user_headers()),
            ("PUT", "/users/user_big/customer", backend_headers()),
        ],
    )
    async def test_a_body_over_the_cap_is_refused_before_it_is_read(
        self, client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
    ) -> None:
        body = b'{"return_url": "' + b"x" * JSON_MAX_BODY_BYTES + b'"}'
        response = await client.request(
            method, path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "content_too_large"

    async def test_a_streamed_body_without_length_is_cut_at_the_cap(
        self, client: httpx.AsyncClient
    ) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"return_url": "'
            for _ in range(20):
                yield b"x" * 8192
            yield b'"}'

        response = await client.post(
            "/portal-sessions",
            content=chunks(),
            headers={**user_headers("user_stream"), "Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["code"] == "content_too_large"
        assert (await client.get("/me", headers=user_headers("user_stream"))).status_code == 404

    async def test_a_body_under_the_cap_is_served(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/portal-sessions",
            json={"return_url": "https://app.example.com/account"},
            headers=user_headers("user_small"),
        )
        assert response.status_code == 201


@pytest.mark.sqlite
class TestJsonDepth:
    @pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 500, 900, 5000, 100_000])
    async def test_a_webhook_nested_too_deep_is_invalid_and_not_recorded(
        self, client: httpx.AsyncClient, depth: int
    ) -> None:
        # Regression: at 500 to 900 levels the payload redaction hit Python's recursion
        # limit and the delivery answered an unhandled 500.
        body = deep_event(depth)
        response = await client.post("/webhooks", content=body, headers=signed_headers(body))
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_payload"
        listed = await client.get("/admin/events", headers={"X-API-Key": "admin-key-0123456789"})
        assert listed.json()["data"] == []

    async def test_a_webhook_at_the_depth_limit_is_applied(self, client: httpx.AsyncClient) -> None:
        body = deep_event(MAX_JSON_DEPTH)
        response = await client.post("/webhooks", content=body, headers=signed_headers(body))
        assert response.json() == {"received": True, "status": "processed"}

    @pytest.mark.parametrize("depth", [50, 500, 900, 5000, 100_000])
    @pytest.mark.parametrize(
        ("method", "path", "headers", "field"),
        [
            ("POST", "/portal-sessions", user_headers(), "return_url"),
            ("PUT", "/users/user_deep/customer", backend_headers(), "customer_id"),
        ],
    )
    async def test_deep_json_on_the_json_routes_is_a_client_error(
        self,
        client: httpx.AsyncClient,
        depth: int,
        method: str,
        path: str,
        headers: dict[str, str],
        field: str,
    ) -> None:
        body = f'{{"{field}": {deep(depth)}}}'.encode()
        response = await client.request(
            method, path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status_code in (400, 413, 422), response.text
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.sqlite
class TestMalformedBodies:
    @pytest.mark.parametrize("body", [b"T\xff", b'{"return_url": "\xc3"}', b"\xff\xfe{}"])
    async def test_a_body_that_is_not_utf8_is_an_invalid_request(
        self, client: httpx.AsyncClient, body: bytes
    ) -> None:
        # Found by schemathesis: FastAPI answered these with an undocumented bare 400.
        response = await client.post(
            "/portal-sessions",
            content=body,
            headers={**user_headers(), "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"
