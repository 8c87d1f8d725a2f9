"""Every error is RFC 9457 problem+json with a stable code, and every response has an X-Request-ID."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import httpx
import pytest
from fastapi import Path
from pydantic import BaseModel, Field

from portal_service.config import Settings
from portal_service.errors import CustomerNotFound
from portal_service.main import create_app

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


class ItemBody(BaseModel):
    quantity: int = Field(ge=1)


@pytest.fixture
async def app_client(
    settings_factory: Callable[..., Settings],
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app plus test-only routes that fail in each way a real route can."""
    app = create_app(settings_factory())

    @app.get("/test-only/boom")
    async def boom() -> None:
        raise RuntimeError("password hunter2 leaked from /srv/portal/internal.py")

    @app.post("/test-only/items/{item_id}")
    async def items(item_id: Annotated[int, Path()], body: ItemBody) -> dict[str, int]:
        return {"item_id": item_id, "quantity": body.quantity}

    @app.get("/test-only/customer")
    async def customer() -> None:
        raise CustomerNotFound()

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://portal-service.dev/problems/{code}"
    assert "x-request-id" in response.headers
    return body


@pytest.mark.sqlite
class TestProblemJson:
    async def test_unknown_route_is_404_not_found(self, app_client: httpx.AsyncClient) -> None:
        body = assert_problem(await app_client.get("/nothing/here"), 404, "not_found")
        assert body["title"] == "Not Found"

    async def test_wrong_method_is_405_with_allow_header(
        self, app_client: httpx.AsyncClient
    ) -> None:
        response = await app_client.delete("/healthz")
        assert_problem(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "GET"

    async def test_invalid_path_and_body_are_422_invalid_request(
        self, app_client: httpx.AsyncClient
    ) -> None:
        response = await app_client.post("/test-only/items/abc", json={"quantity": 0})
        body = assert_problem(response, 422, "invalid_request")
        assert isinstance(body["detail"], str)
        assert "item_id" in body["detail"]
        assert "quantity" in body["detail"]
        assert isinstance(body["errors"], list)
        assert {tuple(e["loc"]) for e in body["errors"]} == {
            ("path", "item_id"),
            ("body", "quantity"),
        }

    async def test_validation_errors_do_not_echo_the_input(
        self, app_client: httpx.AsyncClient
    ) -> None:
        response = await app_client.post("/test-only/items/1", json={"quantity": "sk_live_x9"})
        assert_problem(response, 422, "invalid_request")
        assert "sk_live_x9" not in response.text

    async def test_malformed_json_is_422_saying_so(self, app_client: httpx.AsyncClient) -> None:
        response = await app_client.post(
            "/test-only/items/1",
            content=b'{"quantity": ',
            headers={"Content-Type": "application/json"},
        )
        body = assert_problem(response, 422, "invalid_request")
        assert body["detail"] == "body: not valid JSON"

    async def test_domain_error_renders_its_status_and_code(
        self, app_client: httpx.AsyncClient
    ) -> None:
        body = assert_problem(
            await app_client.get("/test-only/customer"), 404, "customer_not_found"
        )
        assert body["detail"] == CustomerNotFound.default_detail

    async def test_unexpected_error_is_500_problem_without_internals(
        self, app_client: httpx.AsyncClient
    ) -> None:
        response = await app_client.get("/test-only/boom")
        body = assert_problem(response, 500, "internal_error")
        assert body["request_id"] == response.headers["x-request-id"]
        for leak in ("hunter2", "RuntimeError", "Traceback", "internal.py", "/srv/"):
            assert leak not in response.text

    async def test_unexpected_error_keeps_the_callers_request_id(
        self, app_client: httpx.AsyncClient
    ) -> None:
        response = await app_client.get("/test-only/boom", headers={"X-Request-ID": "trace-500"})
        body = assert_problem(response, 500, "internal_error")
        assert response.headers["x-request-id"] == "trace-500"
        assert body["request_id"] == "trace-500"


@pytest.mark.sqlite
class TestRequestId:
    @pytest.mark.parametrize("request_id", ["abc123", "req-1.2_3:4", "a" * 128])
    async def test_valid_request_id_is_echoed(
        self, app_client: httpx.AsyncClient, request_id: str
    ) -> None:
        response = await app_client.get("/healthz", headers={"X-Request-ID": request_id})
        assert response.headers["x-request-id"] == request_id

    async def test_request_id_is_echoed_on_errors_too(self, app_client: httpx.AsyncClient) -> None:
        response = await app_client.get("/missing", headers={"X-Request-ID": "err-42"})
        assert response.status_code == 404
        assert response.headers["x-request-id"] == "err-42"

    @pytest.mark.parametrize(
        "request_id",
        ["has space", "a" * 129, "semi;colon", "<script>", ""],
        ids=["space", "too-long", "semicolon", "markup", "empty"],
    )
    async def test_malformed_request_id_is_replaced(
        self, app_client: httpx.AsyncClient, request_id: str
    ) -> None:
        response = await app_client.get("/healthz", headers={"X-Request-ID": request_id})
        assert GENERATED_ID.match(response.headers["x-request-id"])

    async def test_missing_request_id_is_generated_per_request(
        self, app_client: httpx.AsyncClient
    ) -> None:
        first = (await app_client.get("/healthz")).headers["x-request-id"]
        second = (await app_client.get("/healthz")).headers["x-request-id"]
        assert GENERATED_ID.match(first)
        assert GENERATED_ID.match(second)
        assert first != second

    async def test_response_carries_exactly_one_request_id(
        self, app_client: httpx.AsyncClient
    ) -> None:
        response = await app_client.get("/healthz", headers={"X-Request-ID": "only-once"})
        assert response.headers.get_list("x-request-id") == ["only-once"]
