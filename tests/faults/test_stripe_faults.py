"""Stripe misbehaving under a real `portal-service serve`: time-outs, 5xx, 409 conflicts
(and idempotency_key_in_use for two requests in flight) and 429. Every outbound call has
a time-out, retries are bounded (1 + STRIPE_MAX_NETWORK_RETRIES attempts), the answer is
then 503 stripe_unavailable, and no request hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from faults.fake_stripe import FakeStripe, always, error, fake_stripe, hang
from faults.services import Service
from mirror.conftest import Rows
from portal_service.mirror.tables import PortalSession
from support import user_headers

RETRIES = 2
STRIPE_TIMEOUT = 0.5
# 3 attempts of at most STRIPE_TIMEOUT, backoffs of at most 0.5 s and 1 s, and slack.
BOUND = 3 * STRIPE_TIMEOUT + 1.5 + 3.0


@pytest.fixture
async def stripe() -> AsyncIterator[FakeStripe]:
    async with fake_stripe() as fake:
        yield fake


@pytest.fixture
async def service(
    engine: object, stripe: FakeStripe, database_url: str, tmp_path: Path
) -> AsyncIterator[Service]:
    service = await Service(
        database_url,
        tmp_path,
        stripe_api_key="sk_test_fault",
        stripe_api_base=stripe.url,
        stripe_max_network_retries=str(RETRIES),
        stripe_timeout=str(STRIPE_TIMEOUT),
        rate_limit_portal_sessions="100/minute",
    ).start()
    try:
        yield service
    finally:
        await service.stop()


async def open_portal(service: Service, user: str, **headers: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            f"{service.url}/portal-sessions", headers={**user_headers(user), **headers}
        )
    return response, time.monotonic() - started


def attempts(stripe: FakeStripe, user: str) -> list[Any]:
    return [
        s for s in stripe.sent("/v1/billing_portal/sessions") if s.form["customer"] == f"cus_{user}"
    ]


@pytest.mark.slow
class TestStripeFaults:
    @pytest.mark.parametrize(
        ("user", "behaviour"),
        [
            ("timeout_user", hang(30)),
            ("error_user", always(lambda: error(500))),
            ("busy_user", always(lambda: error(503))),
            ("conflict_user", always(lambda: error(409, "lock_timeout"))),
        ],
    )
    async def test_retried_a_bounded_number_of_times_then_unavailable(
        self, stripe: FakeStripe, service: Service, user: str, behaviour: Any
    ) -> None:
        stripe.sessions[f"cus_{user}"] = behaviour
        response, elapsed = await open_portal(service, user, **{"Idempotency-Key": f"k-{user}"})
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "stripe_unavailable"
        assert elapsed < BOUND, f"{elapsed:.1f} s"
        sent = attempts(stripe, user)
        assert len(sent) == 1 + RETRIES
        # Every retry is the same request: one idempotency key for all attempts.
        assert len({s.idempotency_key for s in sent}) == 1

    async def test_429_is_not_retried_and_says_when_to_come_back(
        self, stripe: FakeStripe, service: Service
    ) -> None:
        stripe.sessions["cus_limited_user"] = always(
            lambda: error(429, "rate_limit", **{"Retry-After": "7"})
        )
        response, elapsed = await open_portal(service, "limited_user")
        assert (response.status_code, response.json()["code"]) == (503, "stripe_unavailable")
        assert response.headers["retry-after"] == "7"
        assert len(attempts(stripe, "limited_user")) == 1
        assert elapsed < BOUND

    async def test_two_requests_in_flight_with_one_key_make_one_session(
        self, stripe: FakeStripe, service: Service, rows: Rows
    ) -> None:
        # The first request is slow at Stripe; the second, with the same key, meets
        # Stripe's 409 idempotency_key_in_use and is retried until Stripe replays the first.
        stripe.sessions["cus_twin_user"] = hang(0.4)
        (first, _), (second, _) = await asyncio.gather(
            open_portal(service, "twin_user", **{"Idempotency-Key": "same-key"}),
            open_portal(service, "twin_user", **{"Idempotency-Key": "same-key"}),
        )
        assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
        assert first.json()["id"] == second.json()["id"]
        sent = attempts(stripe, "twin_user")
        assert len(sent) >= 3  # the slow one, the refused twin, and the twin's retry
        assert len({s.idempotency_key for s in sent}) == 1
        sessions = await rows.all(PortalSession, customer_id="cus_twin_user")
        assert [s.id for s in sessions] == [first.json()["id"]]
