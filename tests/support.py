"""Helpers for tests: tokens, API-key headers, Stripe events and signed webhook deliveries.

Importable from any test module (`from support import deliver, make_event`).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
import jwt

from portal_service.mirror.signatures import sign

WEBHOOK_SECRET = "whsec_test_secret_one"
JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
BACKEND_KEY = "backend-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"


def make_token(sub: str = "user_1", *, secret: str = JWT_SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def user_headers(sub: str = "user_1", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(sub, **claims)}"}


def backend_headers() -> dict[str, str]:
    return {"X-API-Key": BACKEND_KEY}


def admin_headers() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


def make_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    livemode: bool = False,
    account: str | None = None,
    api_version: str = "2026-10-28.endive",
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "type": event_type,
        "created": created if created is not None else int(time.time()),
        "livemode": livemode,
        "api_version": api_version,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": obj},
    }
    if account is not None:
        event["account"] = account
    return event


def signed_headers(
    body: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Stripe-Signature": sign(body, secret, timestamp=ts),
        "Content-Type": "application/json",
    }


async def deliver(
    client: httpx.AsyncClient, event: dict[str, Any], *, secret: str = WEBHOOK_SECRET
) -> httpx.Response:
    """POST an event to /webhooks the way Stripe does: raw JSON body, real HMAC signature."""
    body = json.dumps(event).encode()
    return await client.post("/webhooks", content=body, headers=signed_headers(body, secret=secret))
