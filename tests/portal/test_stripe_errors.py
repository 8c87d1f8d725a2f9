"""Stripe's failures as the API reports them (gateway/stripe.py's mapping, through
POST /portal-sessions): 4xx is 502 stripe_error with Stripe's request id; network errors,
timeouts and 5xx after the SDK's retries are 503 stripe_unavailable; 429 is 503 with
Retry-After."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from portal.fakes import Mirror, StripeFake, stripe_error
from portal_service.mirror.tables import Customer, PortalSession
from support import user_headers

SESSIONS = "/v1/billing_portal/sessions"


@pytest.fixture
async def linked(mirror: Mirror) -> None:
    await mirror.customer("cus_1", app_user_id="user_1")


async def _post(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/portal-sessions", headers=user_headers("user_1"))


def stripe_requests(operation: str, outcome: str) -> float:
    labels = {"operation": operation, "outcome": outcome}
    return REGISTRY.get_sample_value("portal_stripe_requests_total", labels) or 0.0


@pytest.mark.usefixtures("linked")
class TestStripeErrorMapping:
    @pytest.mark.parametrize(
        ("status", "code"),
        [
            pytest.param(400, "parameter_invalid_empty", id="400"),
            pytest.param(402, "card_declined", id="402"),
            pytest.param(404, "resource_missing", id="404"),
            pytest.param(405, None, id="405"),
        ],
    )
    async def test_stripe_4xx_is_stripe_error_with_its_request_id(
        self,
        stripe_app: httpx.AsyncClient,
        stripe_fake: StripeFake,
        mirror: Mirror,
        status: int,
        code: str | None,
    ) -> None:
        before = stripe_requests("billing_portal.sessions.create", "refused")
        stripe_fake.fail_next(SESSIONS, stripe_error(status, code=code))
        response = await _post(stripe_app)
        assert response.status_code == 502
        body = response.json()
        assert body["code"] == "stripe_error"
        assert body["stripe_request_id"] == f"req_error_{status}"
        assert body["detail"] == f"Fake Stripe error {status}."
        assert await mirror.all(PortalSession) == []
        assert stripe_requests("billing_portal.sessions.create", "refused") >= before

    @pytest.mark.parametrize("status", [401, 403])
    async def test_stripe_refusing_our_key_does_not_echo_stripes_message(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, status: int
    ) -> None:
        stripe_fake.fail_next(
            SESSIONS,
            httpx.Response(
                status,
                json={
                    "error": {
                        "type": "invalid_request_error",
                        "message": "Invalid API Key provided: sk_test_***123",
                    }
                },
                headers={"Request-Id": "req_auth"},
            ),
        )
        response = await _post(stripe_app)
        assert response.status_code == 502
        body = response.json()
        assert body["stripe_request_id"] == "req_auth"
        assert "sk_test" not in response.text
        assert "STRIPE_API_KEY" in body["detail"]

    async def test_stripe_429_is_unavailable_with_retry_after(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        stripe_fake.fail_next(
            SESSIONS,
            stripe_error(429, code="rate_limit", type_="rate_limit_error", **{"Retry-After": "7"}),
        )
        response = await _post(stripe_app)
        assert response.status_code == 503
        assert response.json()["code"] == "stripe_unavailable"
        assert response.headers["retry-after"] == "7"

    async def test_stripe_429_without_retry_after_still_says_when(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        stripe_fake.fail_next(SESSIONS, stripe_error(429, type_="rate_limit_error"))
        response = await _post(stripe_app)
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1

    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_stripe_5xx_is_unavailable(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, status: int
    ) -> None:
        stripe_fake.fail_next(SESSIONS, stripe_error(status, type_="api_error"))
        response = await _post(stripe_app)
        assert response.status_code == 503
        assert response.json()["code"] == "stripe_unavailable"

    @pytest.mark.parametrize(
        "exception",
        [
            httpx.ReadTimeout("timed out"),
            httpx.ConnectTimeout("timed out"),
            httpx.ConnectError("connection refused"),
        ],
        ids=["read-timeout", "connect-timeout", "connect-error"],
    )
    async def test_network_errors_and_timeouts_are_unavailable(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, exception: Exception
    ) -> None:
        stripe_fake.fail_next(SESSIONS, exception)
        response = await _post(stripe_app)
        assert response.status_code == 503
        assert response.json()["code"] == "stripe_unavailable"

    async def test_a_conflict_that_outlasts_the_retries_is_unavailable(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        stripe_fake.fail_next(SESSIONS, stripe_error(409, code="idempotency_key_in_use"))
        response = await _post(stripe_app)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"

    async def test_failures_are_retried_with_the_same_idempotency_key(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake
    ) -> None:
        stripe_fake.fail_next(
            SESSIONS,
            stripe_error(500, type_="api_error"),
            stripe_error(503, type_="api_error"),
        )
        async with stripe_client(stripe_max_network_retries=1) as client:
            response = await _post(client)
        assert response.status_code == 503
        attempts = stripe_fake.sessions_sent
        assert len(attempts) == 2
        assert attempts[0].headers["Idempotency-Key"] == attempts[1].headers["Idempotency-Key"]

    async def test_a_retry_that_succeeds_creates_the_session(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake
    ) -> None:
        stripe_fake.fail_next(SESSIONS, httpx.ConnectError("reset"))
        async with stripe_client(stripe_max_network_retries=1) as client:
            response = await _post(client)
        assert response.status_code == 201
        assert len(stripe_fake.sessions_sent) == 2


class TestCustomerCreationErrors:
    async def test_a_refused_customer_creation_links_nothing(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        stripe_fake.fail_next("/v1/customers", stripe_error(400, code="email_invalid"))
        response = await _post(stripe_app)
        assert response.status_code == 502
        assert response.json()["stripe_code"] == "email_invalid"
        assert await mirror.all(Customer) == []
        assert stripe_fake.sessions_sent == []

    async def test_the_link_survives_a_failed_session_and_the_retry_reuses_it(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        stripe_fake.fail_next(SESSIONS, stripe_error(503, type_="api_error"))
        failed = await _post(stripe_app)
        retried = await _post(stripe_app)
        assert failed.status_code == 503
        assert retried.status_code == 201
        (customer,) = await mirror.all(Customer)
        assert customer.app_user_id == "user_1"
        assert len(stripe_fake.customers_sent) == 1
