"""The peers `bench/run.py` measures portal-service against, each served by one uvicorn worker
with the same flags as `portal-service serve`.

- `intake_app`: the minimal webhook endpoint of issue 8. It verifies the Stripe signature,
  then in one transaction inserts the event (ON CONFLICT DO NOTHING) and upserts the
  subscription guarded by its `created` (an older event never overwrites a newer one).
  Nothing else: no dedupe answer, no per-object lock, no projection, no metrics, no logs.
- `hello_app`: FastAPI's hello world, for GET /me/entitlements.
- `read_app`: the least a database-backed GET /me/entitlements can do: verify the HS256
  bearer token with PyJWT, run one indexed SELECT of the user's customer on an asyncpg
  pool, answer JSON. No policy, no subscriptions or features, no ETag, no middleware. It
  shows what one database round trip costs on this machine against the hello world.
- `portal_app`: the least a POST /portal-sessions on this stack can do: verify the HS256
  bearer token, create the session with the official SDK (`StripeClient` over
  `HTTPXClient`, as portal-service does) against the bench's fake Stripe, answer its URL.
  No database, no checks, no record. Its latency beyond the fake's is the SDK's and
  httpx's share, which no service built on them avoids.

Settings come from the environment (BASELINE_DATABASE_URL, a plain postgresql:// URL,
BASELINE_WEBHOOK_SECRET, BASELINE_JWT_SECRET, BASELINE_STRIPE_API_BASE): uvicorn's
--factory calls these with no arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import jwt
import stripe
from fastapi import FastAPI, Request, Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS baseline_events (
    id text PRIMARY KEY, type text NOT NULL, created bigint NOT NULL, payload jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS baseline_subscriptions (
    id text PRIMARY KEY, customer text, status text, created bigint NOT NULL, raw jsonb NOT NULL
);
"""
INSERT_EVENT = (
    "INSERT INTO baseline_events (id, type, created, payload) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (id) DO NOTHING"
)
UPSERT_SUBSCRIPTION = (
    "INSERT INTO baseline_subscriptions AS s (id, customer, status, created, raw) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET customer = excluded.customer, "
    "status = excluded.status, created = excluded.created, raw = excluded.raw "
    "WHERE s.created < excluded.created"
)
READ_CUSTOMER = (
    "SELECT id, email FROM customers WHERE app_user_id = $1 AND livemode = false "
    "AND account = '' AND NOT deleted"
)
TOLERANCE = 300
ACK = b'{"received":true,"status":"processed"}'


def _verified(body: bytes, header: str, secret: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    timestamp = parts.get("t", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def intake_app() -> FastAPI:
    database_url = os.environ["BASELINE_DATABASE_URL"]
    secret = os.environ["BASELINE_WEBHOOK_SECRET"].encode()
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(database_url, min_size=10, max_size=20)
        async with pool.acquire() as connection:
            await connection.execute(SCHEMA)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/webhooks")
    async def webhooks(request: Request) -> Response:
        body = await request.body()
        if not _verified(body, request.headers.get("stripe-signature", ""), secret):
            return Response(status_code=400)
        event = json.loads(body)
        obj = event["data"]["object"]
        assert pool is not None
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(
                INSERT_EVENT, event["id"], event["type"], event["created"], body.decode()
            )
            await connection.execute(
                UPSERT_SUBSCRIPTION,
                obj["id"],
                obj["customer"],
                obj["status"],
                event["created"],
                json.dumps(obj),
            )
        return Response(ACK, media_type="application/json")

    return app


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def hello() -> dict[str, str]:
        return {"message": "Hello World"}

    return app


def read_app() -> FastAPI:
    database_url = os.environ["BASELINE_DATABASE_URL"]
    secret = os.environ["BASELINE_JWT_SECRET"]
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(database_url, min_size=10, max_size=20)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/me/entitlements")
    async def entitlements(request: Request) -> Response:
        subject = _bearer_subject(request, secret)
        if subject is None:
            return Response(status_code=401)
        assert pool is not None
        row = await pool.fetchrow(READ_CUSTOMER, subject)
        body = {"customer_id": row["id"] if row else None, "has_access": row is not None}
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    return app


def _bearer_subject(request: Request, secret: str) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme != "Bearer":
        return None
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return None
    subject = claims.get("sub")
    return subject if isinstance(subject, str) else None


def portal_app() -> FastAPI:
    secret = os.environ["BASELINE_JWT_SECRET"]
    http = stripe.HTTPXClient(timeout=10)
    client = stripe.StripeClient(
        "sk_test_bench",
        base_addresses={"api": os.environ["BASELINE_STRIPE_API_BASE"]},
        http_client=http,
        max_network_retries=0,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    app = FastAPI(lifespan=lifespan)

    @app.post("/portal-sessions")
    async def portal_sessions(request: Request) -> Response:
        if _bearer_subject(request, secret) is None:
            return Response(status_code=401)
        session = await client.v1.billing_portal.sessions.create_async(
            params={"customer": "cus_bench0", "return_url": "https://app.example.com/account"}
        )
        body = {"id": session.id, "url": session.url}
        return Response(
            json.dumps(body, separators=(",", ":")), status_code=201, media_type="application/json"
        )

    return app
