"""A local fake of the few Stripe endpoints the benchmarks call, with a fixed latency.

POST /v1/billing_portal/sessions answers a session after FAKE_STRIPE_LATENCY_MS (default
50); GET /v1/customers and /v1/subscriptions page through FAKE_STRIPE_OBJECTS objects
each, FAKE_STRIPE_PAGE_LATENCY_MS (default 20) per page. Served on 127.0.0.1 by uvicorn
(`--factory bench.fake_stripe:fake_stripe_app`); nothing here talks to Stripe.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CREATED = 1_700_000_000


def _customer(n: int) -> dict[str, Any]:
    return {
        "id": f"cus_sync{n:06d}",
        "object": "customer",
        "address": None,
        "created": CREATED + n,
        "default_source": None,
        "email": f"user{n}@example.com",
        "invoice_settings": {"default_payment_method": None},
        "livemode": False,
        "metadata": {},
        "name": f"User {n}",
        "preferred_locales": [],
        "tax_exempt": "none",
    }


def _subscription(n: int) -> dict[str, Any]:
    start = CREATED + n
    item = {
        "id": f"si_sync{n:06d}",
        "object": "subscription_item",
        "created": start,
        "price": {
            "id": "price_bench",
            "object": "price",
            "product": "prod_bench",
            "currency": "eur",
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "tax_behavior": "exclusive",
            "type": "recurring",
            "unit_amount": 1500,
        },
        "quantity": 1,
        "subscription": f"sub_sync{n:06d}",
        "current_period_start": start,
        "current_period_end": start + 30 * 86400,
    }
    return {
        "id": f"sub_sync{n:06d}",
        "object": "subscription",
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": start,
        "currency": "eur",
        "customer": f"cus_sync{n:06d}",
        "default_payment_method": None,
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "url": "/v1/subscription_items",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": {},
        "pause_collection": None,
        "schedule": None,
        "start_date": start,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
    }


def fake_stripe_app() -> Starlette:
    latency = float(os.environ.get("FAKE_STRIPE_LATENCY_MS", "50")) / 1000
    page_latency = float(os.environ.get("FAKE_STRIPE_PAGE_LATENCY_MS", "20")) / 1000
    count = int(os.environ.get("FAKE_STRIPE_OBJECTS", "0"))
    lists = {
        "/v1/customers": [_customer(n) for n in range(count)],
        "/v1/subscriptions": [_subscription(n) for n in range(count)],
    }
    index = {path: {obj["id"]: i for i, obj in enumerate(objs)} for path, objs in lists.items()}

    async def create_session(request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode()))
        await asyncio.sleep(latency)
        session_id = "bps_" + secrets.token_hex(8)
        return JSONResponse(
            {
                "id": session_id,
                "object": "billing_portal.session",
                "configuration": "bpc_bench",
                "created": int(time.time()),
                "customer": form.get("customer"),
                "flow": None,
                "livemode": False,
                "locale": form.get("locale"),
                "on_behalf_of": None,
                "return_url": form.get("return_url"),
                "url": f"https://billing.stripe.com/p/session/test_{session_id}",
            },
            headers={"Request-Id": "req_" + session_id},
        )

    async def list_objects(request: Request) -> JSONResponse:
        path = request.url.path
        objects = lists[path]
        limit = int(request.query_params.get("limit", "10"))
        after = request.query_params.get("starting_after")
        start = index[path][after] + 1 if after else 0
        page = objects[start : start + limit]
        await asyncio.sleep(page_latency)
        return JSONResponse(
            {
                "object": "list",
                "data": page,
                "has_more": start + limit < len(objects),
                "url": path,
            }
        )

    return Starlette(
        routes=[
            Route("/v1/billing_portal/sessions", create_session, methods=["POST"]),
            Route("/v1/customers", list_objects, methods=["GET"]),
            Route("/v1/subscriptions", list_objects, methods=["GET"]),
        ]
    )
