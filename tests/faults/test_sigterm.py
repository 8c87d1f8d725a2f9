"""SIGTERM to a real `portal-service serve`: the in-flight request finishes, new
connections are refused, and the process exits within its grace period, even when a
request would outlast it."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from faults.fake_stripe import fake_stripe, hold_until
from faults.services import Service
from support import user_headers


async def refused(url: str) -> bool:
    """A new request on a new connection is not served: the connection is refused, or (in
    the moment the listener closes) accepted and closed without an answer."""
    async with httpx.AsyncClient(timeout=2) as fresh:  # a new connection, not a pooled one
        try:
            await fresh.get(f"{url}/healthz")
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            return True
    return False


@pytest.mark.slow
class TestSigterm:
    async def test_in_flight_request_finishes_new_ones_are_refused_and_it_exits(
        self, engine: object, database_url: str, tmp_path: Path
    ) -> None:
        released = asyncio.Event()
        async with fake_stripe() as stripe:
            stripe.sessions["cus_term_user"] = hold_until(released)
            service = await Service(
                database_url,
                tmp_path,
                "--graceful-timeout",
                "15",
                stripe_api_key="sk_test_fault",
                stripe_api_base=stripe.url,
            ).start()
            try:
                async with httpx.AsyncClient(timeout=30) as http:
                    in_flight = asyncio.create_task(
                        http.post(
                            f"{service.url}/portal-sessions", headers=user_headers("term_user")
                        )
                    )
                    await asyncio.wait_for(stripe.session_requested.wait(), timeout=15)
                    service.signal(signal.SIGTERM)
                    for _ in range(100):
                        if await refused(service.url):
                            break
                        await asyncio.sleep(0.05)
                    else:
                        pytest.fail("new connections were still accepted after SIGTERM")
                    assert not in_flight.done()
                    released.set()
                    response = await asyncio.wait_for(in_flight, timeout=15)
                assert response.status_code == 201, response.text
                assert response.json()["url"].startswith("https://billing.stripe.com/p/session/")
                # uvicorn shuts down gracefully, then re-raises the signal it caught: the
                # exit status is SIGTERM's, as for any process that honours it.
                assert await service.wait(10) in (0, -signal.SIGTERM)
            finally:
                released.set()
                await service.stop()

    async def test_a_request_outlasting_the_grace_period_does_not_keep_the_process(
        self, engine: object, database_url: str, tmp_path: Path
    ) -> None:
        never = asyncio.Event()
        async with fake_stripe() as stripe:
            stripe.sessions["cus_stuck_user"] = hold_until(never)
            service = await Service(
                database_url,
                tmp_path,
                "--graceful-timeout",
                "1",
                stripe_api_key="sk_test_fault",
                stripe_api_base=stripe.url,
                stripe_timeout="60",
            ).start()
            try:
                async with httpx.AsyncClient(timeout=30) as http:
                    in_flight = asyncio.create_task(
                        http.post(
                            f"{service.url}/portal-sessions", headers=user_headers("stuck_user")
                        )
                    )
                    await asyncio.wait_for(stripe.session_requested.wait(), timeout=15)
                    started = time.monotonic()
                    service.signal(signal.SIGTERM)
                    await service.wait(10)
                    elapsed = time.monotonic() - started
                    try:
                        answer: httpx.Response | None = await asyncio.wait_for(in_flight, 5)
                    except httpx.TransportError:
                        answer = None
                assert elapsed < 5, f"exited {elapsed:.1f} s after SIGTERM (grace 1 s)"
                # Cut off, never a success it did not finish.
                assert answer is None or answer.status_code >= 500
            finally:
                never.set()
                await service.stop()
