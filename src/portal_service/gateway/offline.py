"""Offline mode (no STRIPE_API_KEY): a local stand-in that creates customers and portal
sessions itself. Sessions point at a page of this service showing the mirrored state, on
the host and port the creating request reached."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from portal_service.db import utcnow
from portal_service.errors import StripeError
from portal_service.gateway.base import (
    Fetched,
    ListKind,
    ListPage,
    ObjectKind,
    StripeIdempotencyConflict,
    StripeObjectMissing,
    active_entitlement_summary,
)

SESSION_LIFETIME_SECONDS = 300


@dataclass(frozen=True, slots=True)
class _IssuedSession:
    """What an Idempotency-Key replays: the session without its URL, which is rebuilt for
    the host each request reached (the page is served by whichever answered it)."""

    params: dict[str, Any]
    session: dict[str, Any]
    token: str


def _portal_url(service_url: str, token: str) -> str:
    return f"{service_url.rstrip('/')}/offline/portal/{token}"


class OfflineGateway:
    def __init__(self) -> None:
        # A per-process key: offline portal links die with the process, like real ones expire.
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, _IssuedSession] = {}
        self._customers: dict[str, dict[str, Any]] = {}

    @property
    def offline(self) -> bool:
        return True

    async def create_customer(
        self, *, email: str | None, app_user_id: str, idempotency_key: str
    ) -> dict[str, Any]:
        # Same key, same customer: the concurrency guarantee real Stripe gives us.
        if idempotency_key in self._customers:
            return self._customers[idempotency_key]
        customer: dict[str, Any] = {
            "id": "cus_offline_" + secrets.token_hex(8),
            "object": "customer",
            "email": email,
            "name": None,
            "metadata": {"app_user_id": app_user_id},
            "created": int(time.time()),
            "livemode": False,
            "preferred_locales": [],
            "invoice_settings": {"default_payment_method": None},
        }
        self._customers[idempotency_key] = customer
        return customer

    async def create_portal_session(
        self, params: dict[str, Any], *, idempotency_key: str | None, service_url: str
    ) -> dict[str, Any]:
        if idempotency_key is not None and idempotency_key in self._sessions:
            issued = self._sessions[idempotency_key]
            # Stripe's rule: the same key with other parameters is refused, not replayed.
            if issued.params != params:
                raise StripeIdempotencyConflict()
            return {**issued.session, "url": _portal_url(service_url, issued.token)}
        created = int(time.time())
        session_id = "bps_offline_" + secrets.token_hex(8)
        token = self.sign_token({"c": params["customer"], "s": session_id, "t": created})
        session = {
            "id": session_id,
            "object": "billing_portal.session",
            "configuration": params.get("configuration") or "bpc_offline_default",
            "created": created,
            "customer": params["customer"],
            "flow": params.get("flow_data"),
            "livemode": False,
            "locale": params.get("locale"),
            "on_behalf_of": params.get("on_behalf_of"),
            "return_url": params.get("return_url"),
        }
        if idempotency_key is not None:
            self._sessions[idempotency_key] = _IssuedSession(
                params=copy.deepcopy(params), session=session, token=token
            )
        return {**session, "url": _portal_url(service_url, token)}

    def sign_token(self, claims: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
        mac = hmac.new(self._key, body, hashlib.sha256).hexdigest()[:32]
        return f"{body.decode().rstrip('=')}.{mac}"

    def read_token(self, token: str) -> dict[str, Any] | None:
        """The claims of a portal link this process issued and that has not expired."""
        body, _, mac = token.partition(".")
        padded = body + "=" * (-len(body) % 4)
        expected = hmac.new(self._key, padded.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, expected):
            return None
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
        if time.time() - claims["t"] > SESSION_LIFETIME_SECONDS:
            return None
        return claims

    async def create_portal_configuration(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> Fetched:
        # Portal configurations only exist in Stripe; offline sessions ignore them.
        raise StripeError("Offline mode: portal configurations need STRIPE_API_KEY.")

    async def update_portal_configuration(
        self, configuration_id: str, params: dict[str, Any], *, idempotency_key: str
    ) -> Fetched:
        raise StripeError("Offline mode: portal configurations need STRIPE_API_KEY.")

    async def retrieve(self, kind: ObjectKind, object_id: str, *, account: str = "") -> Fetched:
        # Nothing exists in Stripe in offline mode: the mirror is the whole truth.
        raise StripeObjectMissing(f"Offline mode: no {kind} {object_id} outside the mirror.")

    async def list_active_entitlements(self, customer_id: str, *, account: str = "") -> Fetched:
        return Fetched(object=active_entitlement_summary(customer_id, []), fetched_at=utcnow())

    async def retrieve_thin_event(self, event_id: str, *, account: str = "") -> Fetched:
        raise StripeObjectMissing(f"Offline mode: no event {event_id} outside the mirror.")

    async def list_webhook_endpoints(self) -> list[dict[str, Any]]:
        raise StripeError("Offline mode: webhook endpoints need STRIPE_API_KEY.")

    async def create_webhook_endpoint(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        raise StripeError("Offline mode: webhook endpoints need STRIPE_API_KEY.")

    async def aclose(self) -> None:
        return None

    async def list_pages(
        self,
        kind: ListKind,
        *,
        params: dict[str, Any],
        customer: str | None = None,
        account: str = "",
    ) -> AsyncIterator[ListPage]:
        # Nothing exists in Stripe in offline mode: every list is empty.
        return
        yield
