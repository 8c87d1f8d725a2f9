"""Idempotency-Key and the per-user rate limit of POST /portal-sessions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from portal.fakes import Mirror, StripeFake
from portal_service.db import utcnow
from portal_service.mirror.tables import PortalSession
from support import BACKEND_KEY, backend_headers, user_headers


def sessions_created() -> float:
    return REGISTRY.get_sample_value("portal_sessions_created_total") or 0.0


def keyed(key: str, sub: str = "user_1") -> dict[str, str]:
    return {**user_headers(sub), "Idempotency-Key": key}


def caller_of(user_id: str) -> str:
    return "u:" + hashlib.sha256(user_id.encode()).hexdigest()[:16]


class TestIdempotencyKey:
    async def test_same_key_and_body_replays_the_same_session(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        before = sessions_created()
        body = {"return_url": "https://app.example.com/billing", "locale": "de"}
        first = await stripe_app.post("/portal-sessions", headers=keyed("order-7"), json=body)
        second = await stripe_app.post("/portal-sessions", headers=keyed("order-7"), json=body)

        assert first.status_code == second.status_code == 201
        assert second.json() == first.json()
        assert second.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        sent_keys = [r.headers["Idempotency-Key"] for r in stripe_fake.sessions_sent]
        assert sent_keys == [f"{caller_of('user_1')}:order-7"] * 2
        (row,) = await mirror.all(PortalSession)
        stripe_key = f"{caller_of('user_1')}:order-7"
        assert row.idempotency_key_hash == hashlib.sha256(stripe_key.encode()).hexdigest()
        assert row.request_hash is not None
        assert sessions_created() == before + 1

    async def test_same_key_with_another_body_is_refused(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        await stripe_app.post("/portal-sessions", headers=keyed("k1"), json={"locale": "de"})
        response = await stripe_app.post(
            "/portal-sessions", headers=keyed("k1"), json={"locale": "fr"}
        )
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"
        assert len(stripe_fake.sessions_sent) == 1

    async def test_body_spelling_does_not_matter_to_the_request_hash(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        first = await stripe_app.post(
            "/portal-sessions",
            headers={**keyed("k1"), "Content-Type": "application/json"},
            content=b'{"locale": "de", "return_url": null}',
        )
        second = await stripe_app.post(
            "/portal-sessions",
            headers={**keyed("k1"), "Content-Type": "application/json"},
            content=b'{ "locale":"de" }',
        )
        assert second.json()["id"] == first.json()["id"]

    async def test_a_negotiated_locale_is_part_of_the_request(
        self, stripe_app: httpx.AsyncClient
    ) -> None:
        await stripe_app.post("/portal-sessions", headers={**keyed("k1"), "Accept-Language": "de"})
        response = await stripe_app.post(
            "/portal-sessions", headers={**keyed("k1"), "Accept-Language": "fr"}
        )
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"

    async def test_a_key_just_inside_five_minutes_still_replays(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        first = await stripe_app.post("/portal-sessions", headers=keyed("k1"))
        await mirror.update(
            PortalSession, first.json()["id"], created=utcnow() - timedelta(minutes=4, seconds=50)
        )
        response = await stripe_app.post("/portal-sessions", headers=keyed("k1"))
        assert response.status_code == 201
        assert response.json()["id"] == first.json()["id"]
        assert response.headers["idempotent-replayed"] == "true"
        assert len(await mirror.all(PortalSession)) == 1

    async def test_a_key_older_than_five_minutes_has_expired(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        first = await stripe_app.post("/portal-sessions", headers=keyed("k1"))
        await mirror.update(
            PortalSession, first.json()["id"], created=utcnow() - timedelta(minutes=5, seconds=5)
        )
        response = await stripe_app.post("/portal-sessions", headers=keyed("k1"))
        assert response.status_code == 409
        assert response.json()["code"] == "idempotency_key_expired"
        assert len(stripe_fake.sessions_sent) == 1

    async def test_another_callers_key_never_collides(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_9", app_user_id="user_9")
        mine = await stripe_app.post("/portal-sessions", headers=keyed("shared", "user_1"))
        theirs = await stripe_app.post("/portal-sessions", headers=keyed("shared", "user_2"))
        backend = await stripe_app.post(
            "/portal-sessions",
            headers={**backend_headers(), "Idempotency-Key": "shared"},
            json={"customer_id": "cus_9"},
        )
        assert len({mine.json()["id"], theirs.json()["id"], backend.json()["id"]}) == 3
        key_caller = "k:" + hashlib.sha256(BACKEND_KEY.encode()).hexdigest()[:16]
        assert [r.headers["Idempotency-Key"] for r in stripe_fake.sessions_sent] == [
            f"{caller_of('user_1')}:shared",
            f"{caller_of('user_2')}:shared",
            f"{key_caller}:shared",
        ]

    async def test_without_a_key_the_sdk_sends_its_own(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        await stripe_app.post("/portal-sessions", headers=user_headers("user_1"))
        (sent,) = stripe_fake.sessions_sent
        assert sent.headers["Idempotency-Key"]
        assert not sent.headers["Idempotency-Key"].startswith(("u:", "k:"))

    @pytest.mark.parametrize(
        "key",
        [
            "",
            "x" * 201,
            "has space",
            "dots.are.not.allowed",
            "\u00fcn\u00efcode".encode(),
            "semi;colon",
        ],
        ids=["empty", "too-long", "space", "dots", "non-ascii", "semicolon"],
    )
    @pytest.mark.sqlite
    async def test_malformed_key_is_invalid_request(
        self, client: httpx.AsyncClient, key: str | bytes
    ) -> None:
        headers: dict[str, str | bytes] = {**user_headers("user_1"), "Idempotency-Key": key}
        response = await client.post("/portal-sessions", headers=headers)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    @pytest.mark.sqlite
    async def test_a_key_of_200_allowed_characters_is_accepted(
        self, client: httpx.AsyncClient
    ) -> None:
        key = ("Ab9_-" * 40)[:200]
        response = await client.post("/portal-sessions", headers=keyed(key))
        assert response.status_code == 201

    @pytest.mark.sqlite
    async def test_offline_mode_replays_too(self, client: httpx.AsyncClient) -> None:
        first = await client.post("/portal-sessions", headers=keyed("k1"))
        second = await client.post("/portal-sessions", headers=keyed("k1"))
        assert first.json()["url"] == second.json()["url"]

    @pytest.mark.sqlite
    async def test_offline_mode_refuses_a_concurrent_use_of_the_key_with_another_body(
        self, client: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        # As with Stripe (below): the offline gateway refuses the key with other
        # parameters instead of handing back the first body's session.
        first = await client.post("/portal-sessions", headers=keyed("k1"), json={"locale": "de"})
        await mirror.update(PortalSession, first.json()["id"], idempotency_key_hash=None)
        response = await client.post("/portal-sessions", headers=keyed("k1"), json={"locale": "fr"})
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"

    async def test_a_concurrent_use_of_the_key_with_another_body_is_reused(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        # The first request reached Stripe but its row is not visible yet: Stripe itself
        # refuses the second body (idempotency_error), which is the same refusal.
        first = await stripe_app.post(
            "/portal-sessions", headers=keyed("k1"), json={"locale": "de"}
        )
        await mirror.update(PortalSession, first.json()["id"], idempotency_key_hash=None)
        response = await stripe_app.post(
            "/portal-sessions", headers=keyed("k1"), json={"locale": "fr"}
        )
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"


class TestRateLimit:
    async def test_the_limit_answers_429_with_retry_after(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake
    ) -> None:
        async with stripe_client(rate_limit_portal_sessions="2/minute") as client:
            statuses = [
                (await client.post("/portal-sessions", headers=user_headers("user_1"))).status_code
                for _ in range(2)
            ]
            limited = await client.post("/portal-sessions", headers=user_headers("user_1"))
            other_user = await client.post("/portal-sessions", headers=user_headers("user_2"))
        assert statuses == [201, 201]
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert other_user.status_code == 201
        assert len(stripe_fake.sessions_sent) == 3

    @pytest.mark.sqlite
    async def test_the_count_is_shared_by_every_replica(
        self, client_factory: Callable[..., Any]
    ) -> None:
        async with (
            client_factory(rate_limit_portal_sessions="2/hour") as replica_a,
            client_factory(rate_limit_portal_sessions="2/hour") as replica_b,
        ):
            await replica_a.post("/portal-sessions", headers=user_headers("user_1"))
            await replica_b.post("/portal-sessions", headers=user_headers("user_1"))
            limited = await replica_a.post("/portal-sessions", headers=user_headers("user_1"))
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) > 60

    @pytest.mark.sqlite
    async def test_sessions_older_than_the_window_do_not_count(
        self, client_factory: Callable[..., Any], mirror: Mirror
    ) -> None:
        async with client_factory(rate_limit_portal_sessions="1/minute") as client:
            first = await client.post("/portal-sessions", headers=user_headers("user_1"))
            await mirror.update(
                PortalSession, first.json()["id"], created=utcnow() - timedelta(seconds=61)
            )
            second = await client.post("/portal-sessions", headers=user_headers("user_1"))
        assert second.status_code == 201

    @pytest.mark.sqlite
    async def test_idempotent_replays_do_not_count(
        self, client_factory: Callable[..., Any]
    ) -> None:
        async with client_factory(rate_limit_portal_sessions="1/minute") as client:
            first = await client.post("/portal-sessions", headers=keyed("k1"))
            replay = await client.post("/portal-sessions", headers=keyed("k1"))
            fresh = await client.post("/portal-sessions", headers=keyed("k2"))
        assert (first.status_code, replay.status_code, fresh.status_code) == (201, 201, 429)

    async def test_backend_sessions_count_for_the_customers_user(
        self, stripe_client: Callable[..., Any], mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1", app_user_id="user_1")
        async with stripe_client(rate_limit_portal_sessions="1/minute") as client:
            await client.post("/portal-sessions", headers=user_headers("user_1"))
            response = await client.post(
                "/portal-sessions", headers=backend_headers(), json={"customer_id": "cus_1"}
            )
        assert response.status_code == 429
