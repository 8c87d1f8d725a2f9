"""The entitlements fast lane (access/fast_lane.py, access/facts_pg.py): taken on PostgreSQL
for a bearer token, answering with the route's bytes, headers, ETag and 304, reading the
mirror as committed at each request (the read replica when there is one), and handing
anything else to the route."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from sqlalchemy import event

from portal_service.access.fast_lane import EntitlementsFastLane
from portal_service.auth import VerifiedTokens
from portal_service.db import create_engine, create_sessionmaker
from portal_service.errors import Unauthenticated
from portal_service.migrations import upgrade_async
from portal_service.mirror.tables import Customer
from portal_service.ops.metrics import HTTP_REQUESTS
from support import JWT_SECRET, make_token, user_headers

if TYPE_CHECKING:
    from conftest import MirrorRows

_VOLATILE_HEADERS = {"x-request-id", "date", "content-length"}


@pytest.fixture
def _postgres_only(is_postgres: bool) -> None:
    if not is_postgres:
        pytest.skip("the lane serves PostgreSQL only; SQLite takes the route")


@contextmanager
def through_the_route(client: httpx.AsyncClient) -> Iterator[list[str]]:
    """A statement hook on the read engine: the lane then leaves requests to the route."""
    engine = client.app.state.read_sessionmaker.kw["bind"].sync_engine  # type: ignore[attr-defined]
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def without_evaluated_at(content: bytes) -> bytes:
    if not content:
        return content
    data = json.loads(content)
    data.pop("evaluated_at", None)
    return json.dumps(data).encode()


def same_answer(fast: httpx.Response, routed: httpx.Response) -> None:
    assert fast.status_code == routed.status_code
    assert without_evaluated_at(fast.content) == without_evaluated_at(routed.content)
    fast_headers = {k: v for k, v in fast.headers.items() if k not in _VOLATILE_HEADERS}
    routed_headers = {k: v for k, v in routed.headers.items() if k not in _VOLATILE_HEADERS}
    assert fast_headers == routed_headers


async def call_lane(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[bool, list[Any]]:
    """The lane around an app that only records being called: (handed on, messages sent)."""
    handed_on = False

    async def inner(_scope: Any, _receive: Any, _send: Any) -> None:
        nonlocal handed_on
        handed_on = True

    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/me/entitlements",
        "query_string": b"",
        "headers": headers,
        "app": app,
    }
    await EntitlementsFastLane(inner)(scope, receive, send)
    return handed_on, sent


@pytest.mark.usefixtures("_postgres_only")
class TestTheLane:
    async def test_answers_a_token_without_the_route(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.subscription()
        token = make_token("user_a").encode()
        handed_on, sent = await call_lane(client.app, [(b"authorization", b"Bearer " + token)])  # type: ignore[attr-defined]
        assert not handed_on
        assert sent[0]["status"] == 200
        assert json.loads(sent[1]["body"])["has_access"] is True

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param([], id="no_token"),
            pytest.param([(b"authorization", b"Basic dXNlcjpwdw==")], id="not_bearer"),
            pytest.param([(b"authorization", b"Bearer not-a-jwt")], id="bad_token"),
            pytest.param([(b"x-api-key", b"whatever")], id="api_key"),
        ],
    )
    async def test_hands_anything_else_to_the_route(
        self, client: httpx.AsyncClient, headers: list[tuple[bytes, bytes]]
    ) -> None:
        handed_on, sent = await call_lane(client.app, headers)  # type: ignore[attr-defined]
        assert handed_on
        assert sent == []

    async def test_answers_with_the_routes_bytes_and_headers(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        await rows.subscription(
            items=[{"product_id": "prod_b", "price_id": "price_b"}, {"product_id": "prod_a"}],
            cancel_at=rows.now + timedelta(days=3),
        )
        await rows.subscription("sub_old", status="canceled")
        await rows.invoice("in_a", subscription_id="sub_a")
        await rows.entitlement("export")
        await rows.entitlement("api")
        for user in ("user_a", "nobody"):
            headers = user_headers(user)
            fast = await client.get("/me/entitlements", headers=headers)
            with through_the_route(client) as seen:
                routed = await client.get("/me/entitlements", headers=headers)
            assert seen  # the second one did go through the session
            same_answer(fast, routed)
            # The body is rendered the same way, key order and spacing included.
            evaluated = json.loads(fast.content).get("evaluated_at")
            if evaluated is not None:
                routed_evaluated = json.loads(routed.content)["evaluated_at"]
                assert fast.content == routed.content.replace(
                    routed_evaluated.encode(), evaluated.encode()
                )
            else:
                assert fast.content == routed.content
            etag = fast.headers["ETag"]
            not_modified = await client.get(
                "/me/entitlements", headers={**headers, "If-None-Match": etag}
            )
            with through_the_route(client):
                routed_304 = await client.get(
                    "/me/entitlements", headers={**headers, "If-None-Match": etag}
                )
            assert not_modified.status_code == 304
            assert not_modified.content == b""
            same_answer(not_modified, routed_304)

    async def test_errors_are_the_routes_problems(self, client: httpx.AsyncClient) -> None:
        expired = make_token("user_a", exp=int(time.time()) - 120)
        for headers in ({"Authorization": f"Bearer {expired}"}, {}):
            response = await client.get("/me/entitlements", headers=headers)
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/problem+json"

    async def test_sees_every_committed_write_at_once(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        await rows.customer()
        sub = await rows.subscription()
        headers = user_headers("user_a")
        assert (await client.get("/me/entitlements", headers=headers)).json()["has_access"]
        sub.status = "canceled"
        await rows.add(sub)
        assert not (await client.get("/me/entitlements", headers=headers)).json()["has_access"]

    async def test_labels_metrics_as_the_route(
        self, client: httpx.AsyncClient, rows: MirrorRows
    ) -> None:
        def labelled() -> float:
            counter = HTTP_REQUESTS.labels(route="/me/entitlements", method="GET", status="200")
            value: float = counter._value.get()
            return value

        await rows.customer()
        before = labelled()
        await client.get("/me/entitlements", headers=user_headers("user_a"))
        assert labelled() == before + 1


@pytest.fixture
async def replica_url(scratch_database_url: str) -> str:
    await upgrade_async(scratch_database_url)
    return scratch_database_url


@pytest.mark.usefixtures("_postgres_only")
async def test_reads_the_read_replica(
    client_factory: Any, rows: MirrorRows, replica_url: str
) -> None:
    await rows.customer()  # on the primary only
    replica = create_engine(replica_url)
    try:
        async with create_sessionmaker(replica)() as session:
            session.add(Customer(id="cus_replica", app_user_id="user_a", email="r@example.com"))
            await session.commit()
        async with client_factory(database_read_url=replica_url) as client:
            response = await client.get("/me/entitlements", headers=user_headers("user_a"))
    finally:
        await replica.dispose()
    assert response.json()["customer_id"] == "cus_replica"


@pytest.mark.sqlite
class TestVerifiedTokens:
    async def test_a_cached_token_still_expires(self, settings_factory: Any) -> None:
        settings = settings_factory()
        tokens = VerifiedTokens()
        # Valid for two more seconds: 28 s past exp, within PyJWT's 30 s leeway.
        token = jwt.encode(
            {"sub": "user_x", "exp": int(time.time()) - 28}, JWT_SECRET, algorithm="HS256"
        )
        assert (await tokens.end_user(token, settings, None)).user_id == "user_x"
        assert (await tokens.end_user(token, settings, None)).user_id == "user_x"
        await asyncio.sleep(2.5)
        with pytest.raises(Unauthenticated, match="invalid or expired"):
            await tokens.end_user(token, settings, None)

    async def test_a_token_not_yet_valid_is_refused_every_time(self, settings_factory: Any) -> None:
        settings = settings_factory()
        tokens = VerifiedTokens()
        token = jwt.encode(
            {"sub": "user_x", "exp": int(time.time()) + 600, "nbf": int(time.time()) + 120},
            JWT_SECRET,
            algorithm="HS256",
        )
        for _ in range(2):
            with pytest.raises(Unauthenticated, match="invalid or expired"):
                await tokens.end_user(token, settings, None)

    async def test_other_settings_verify_again(self, settings_factory: Any) -> None:
        tokens = VerifiedTokens()
        token = make_token("user_x")
        assert (await tokens.end_user(token, settings_factory(), None)).user_id == "user_x"
        other = settings_factory(auth_jwt_secret="another-secret-long-enough-for-hs256-use")
        with pytest.raises(Unauthenticated, match="invalid or expired"):
            await tokens.end_user(token, other, None)
