"""No secret in the logs, end to end at DEBUG: the Stripe API key, the webhook secret and
signatures, end-user tokens, API keys and portal URLs, through portal sessions (Stripe
answering and refusing our key) and the webhook path (applied, duplicate, refused
signature, failed apply, admin replay)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import respx

from mirror.stripe_payloads import customer, subscription
from portal.fakes import PORTAL_URL_PREFIX, StripeFake
from portal_service.config import Settings
from portal_service.main import create_app
from support import (
    ADMIN_KEY,
    BACKEND_KEY,
    WEBHOOK_SECRET,
    make_event,
    make_token,
    signed_headers,
)

STRIPE_KEY = "sk_test_51LogSecretKeyThatMustNeverAppear"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    (handler,) = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield stream
    finally:
        handler.setStream(previous)


@pytest.mark.sqlite
class TestNoSecretInLogs:
    async def test_portal_and_webhook_paths_log_no_secret_at_debug(
        self, engine: object, settings_factory: Callable[..., Settings]
    ) -> None:
        token = make_token("user_logs", email="logs@example.com")
        settings = settings_factory(
            stripe_api_key=STRIPE_KEY, stripe_max_network_retries=0, log_level="DEBUG"
        )
        app = create_app(settings)
        with respx.mock(assert_all_called=False) as router:
            fake = StripeFake(router)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    with captured_logs() as stream:
                        auth = {"Authorization": f"Bearer {token}"}
                        created = await client.post("/portal-sessions", headers=auth)
                        # Stripe refusing our key quotes part of it in its message.
                        fake.fail_next(
                            "/v1/billing_portal/sessions",
                            httpx.Response(
                                401,
                                json={
                                    "error": {
                                        "type": "invalid_request_error",
                                        "code": "api_key_invalid",
                                        "message": f"Invalid API Key provided: {STRIPE_KEY}",
                                    }
                                },
                                headers={"Request-Id": "req_refused"},
                            ),
                        )
                        refused = await client.post("/portal-sessions", headers=auth)
                        event = make_event("customer.updated", customer("cus_fake1"))
                        body = json.dumps(event).encode()
                        headers = signed_headers(body)
                        applied = await client.post("/webhooks", content=body, headers=headers)
                        duplicate = await client.post("/webhooks", content=body, headers=headers)
                        forged = await client.post(
                            "/webhooks",
                            content=body,
                            headers={
                                **headers,
                                "Stripe-Signature": headers["Stripe-Signature"] + "0",
                            },
                        )
                        broken = make_event(
                            "customer.subscription.updated", {"object": "subscription"}
                        )
                        broken_body = json.dumps(broken).encode()
                        failed = await client.post(
                            "/webhooks", content=broken_body, headers=signed_headers(broken_body)
                        )
                        replayed = await client.post(
                            f"/admin/events/{event['id']}/replay", headers={"X-API-Key": ADMIN_KEY}
                        )
                        session_event = make_event(
                            "customer.subscription.created", subscription(customer="cus_fake1")
                        )
                        session_body = json.dumps(session_event).encode()
                        await client.post(
                            "/webhooks", content=session_body, headers=signed_headers(session_body)
                        )
        assert created.status_code == 201
        portal_url = created.json()["url"]
        assert portal_url.startswith(PORTAL_URL_PREFIX)
        assert refused.status_code == 502
        assert applied.json()["status"] == "processed"
        assert duplicate.json()["status"] == "duplicate"
        assert forged.status_code == 400
        assert failed.status_code == 500
        assert replayed.status_code == 200
        output = stream.getvalue()
        lines = [json.loads(line) for line in output.splitlines() if line.strip()]
        events = {line["event"] for line in lines}
        # The positive control: the paths above really logged, at DEBUG and above.
        assert {"http_request", "webhook_event", "webhook_apply_failed"} <= events
        assert "stripe_request_failed" in events or "stripe_credentials_refused" in events
        secrets = {
            "stripe api key": STRIPE_KEY,
            "stripe api key tail": STRIPE_KEY[-12:],
            "webhook secret": WEBHOOK_SECRET,
            "webhook signature": headers["Stripe-Signature"].split("v1=")[1],
            "jwt": token,
            "backend key": BACKEND_KEY,
            "admin key": ADMIN_KEY,
            "portal url": portal_url,
            "portal url token": portal_url.removeprefix(PORTAL_URL_PREFIX),
        }
        found = [name for name, secret in secrets.items() if secret in output]
        assert found == []
