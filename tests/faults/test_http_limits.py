"""Limits of a real `portal-service serve` on the wire: header size (431), slow clients
(408 once --read-timeout passes without a whole request; a slow handler is not cut),
and the per-user rate limit holding across two processes on one database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from faults.fake_stripe import fake_stripe, hang
from faults.services import Service, serving
from support import user_headers

READ_TIMEOUT = 1.0


@pytest.fixture
async def service(engine: object, database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    async with serving(database_url, tmp_path, "--read-timeout", str(READ_TIMEOUT)) as service:
        yield service


async def raw(service: Service, *parts: bytes, pause: float = 0.0) -> tuple[bytes, float]:
    """Send `parts` on one connection (pausing between them), then read until closed."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        answer = await asyncio.wait_for(reader.read(), timeout=READ_TIMEOUT + 10)
    finally:
        writer.close()
    return answer, time.monotonic() - started


@pytest.mark.slow
class TestOnTheWire:
    async def test_oversized_headers_are_refused(self, service: Service) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            big = await http.get(f"{service.url}/healthz", headers={"X-Padding": "a" * 40_000})
            fine = await http.get(f"{service.url}/healthz", headers={"X-Padding": "a" * 16_000})
        assert big.status_code == 431
        assert fine.status_code == 200

    async def test_a_client_that_sends_nothing_is_timed_out(self, service: Service) -> None:
        answer, elapsed = await raw(service)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert READ_TIMEOUT <= elapsed < READ_TIMEOUT + 5

    async def test_trickled_headers_are_timed_out(self, service: Service) -> None:
        parts = [b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n"]
        answer, elapsed = await raw(service, *parts, pause=READ_TIMEOUT / 3)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert elapsed < READ_TIMEOUT + 5

    async def test_a_body_that_never_completes_is_timed_out_and_not_recorded(
        self, service: Service
    ) -> None:
        head = (
            b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Stripe-Signature: t=1,v1=00\r\nContent-Length: 1000\r\n\r\n"
        )
        answer, elapsed = await raw(service, head, b'{"id": "evt_slow"')
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
        assert elapsed < READ_TIMEOUT + 5
        async with httpx.AsyncClient(timeout=10) as http:
            listed = await http.get(
                f"{service.url}/admin/events", headers={"X-API-Key": "admin-key-0123456789"}
            )
        assert listed.json()["data"] == []

    async def test_keep_alive_requests_each_get_the_full_read_timeout(
        self, service: Service
    ) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(3):
                assert (await http.get(f"{service.url}/healthz")).status_code == 200
                await asyncio.sleep(READ_TIMEOUT * 0.7)

    async def test_a_slow_handler_is_not_cut_by_the_read_timeout(
        self, engine: object, database_url: str, tmp_path: Path
    ) -> None:
        async with fake_stripe() as stripe:
            stripe.sessions["cus_patient_user"] = hang(READ_TIMEOUT * 2)
            async with (
                serving(
                    database_url,
                    tmp_path,
                    "--read-timeout",
                    str(READ_TIMEOUT),
                    stripe_api_key="sk_test_limits",
                    stripe_api_base=stripe.url,
                ) as service,
                httpx.AsyncClient(timeout=30) as http,
            ):
                response = await http.post(
                    f"{service.url}/portal-sessions", headers=user_headers("patient_user")
                )
        assert response.status_code == 201, response.text


@pytest.mark.slow
class TestRateLimitAcrossProcesses:
    async def test_one_users_limit_holds_across_two_processes(
        self, engine: object, database_url: str, tmp_path: Path
    ) -> None:
        async with (
            serving(database_url, tmp_path, rate_limit_portal_sessions="3/minute") as one,
            serving(database_url, tmp_path, rate_limit_portal_sessions="3/minute") as two,
            httpx.AsyncClient(timeout=30) as http,
        ):
            answers = []
            for n in range(8):
                url = (one, two)[n % 2].url
                answers.append(
                    await http.post(f"{url}/portal-sessions", headers=user_headers("busy_user"))
                )
            other = await http.post(f"{two.url}/portal-sessions", headers=user_headers("calm_user"))
        assert [a.status_code for a in answers] == [201, 201, 201] + [429] * 5
        limited = answers[-1]
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) > 0
        # Both processes counted the same sessions: each refused at least once.
        assert {a.status_code for a in answers[3::2]} == {429}
        assert {a.status_code for a in answers[4::2]} == {429}
        assert other.status_code == 201
