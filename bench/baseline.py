"""The peers `bench/run.py` measures portal-service against, each served by one uvicorn worker
with the same flags as `portal-service serve`.

- `intake_app`: the minimal webhook endpoint of issue 8. It verifies the Stripe signature,
  then in one transaction inserts the event (ON CONFLICT DO NOTHING) and upserts the
  subscription guarded by its `created` (an older event never overwrites a newer one).
  Nothing else: no dedupe answer, no per-object lock, no projection, no metrics, no logs.
- `hello_app`: FastAPI's hello world, for GET /me/entitlements.

Settings come from the environment (BASELINE_DATABASE_URL, a plain postgresql:// URL, and
BASELINE_WEBHOOK_SECRET): uvicorn's --factory calls these with no arguments.
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
