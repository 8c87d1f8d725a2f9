"""Stripe's webhook endpoint for this service (`portal-service webhook-endpoint`, README.md,
"Pointing Stripe's webhooks at it"): what it must look like, what differs, and creating it.

An endpoint on another API version than `STRIPE_API_VERSION` delivers payloads of another
shape (columns left empty); one missing a handled type leaves the mirror stale; a disabled
one delivers nothing. Stripe's endpoint object does not say whether it is a Connect
endpoint, so `create` records that in its metadata (`portal_service_scope`) and `check`
compares it when present.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from portal_service.gateway import Gateway
from portal_service.mirror.projections import EVENT_ROUTES

HANDLED_EVENTS: tuple[str, ...] = tuple(sorted(EVENT_ROUTES))
SCOPE_KEY = "portal_service_scope"


def scope(connect: bool) -> str:
    return "connect" if connect else "account"


def check_url(url: str) -> str:
    """The URL as given, or ValueError: Stripe delivers to absolute http(s) URLs only."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("--url must be an absolute https:// URL (http:// in test mode only)")
    if parts.username or parts.password:
        raise ValueError("--url must not carry credentials")
    return url


@dataclass(frozen=True, slots=True)
class EndpointCheck:
    id: str
    problems: tuple[str, ...]


def endpoint_problems(
    endpoint: dict[str, Any], *, api_version: str, connect: bool
) -> tuple[str, ...]:
    """What is wrong with one endpoint for this service; empty when nothing is."""
    problems: list[str] = []
    if endpoint.get("status") != "enabled":
        problems.append(f"disabled (status {endpoint.get('status')})")
    version = endpoint.get("api_version")
    if version != api_version:
        problems.append(f"api_version {version or '(the account default)'}, expected {api_version}")
    enabled = set(endpoint.get("enabled_events") or [])
    if "*" in enabled:
        problems.append("extra event types: * (every event)")
    else:
        missing = sorted(set(HANDLED_EVENTS) - enabled)
        extra = sorted(enabled - set(HANDLED_EVENTS))
        if missing:
            problems.append("missing event types: " + ", ".join(missing))
        if extra:
            problems.append("extra event types: " + ", ".join(extra))
    metadata = endpoint.get("metadata")
    declared = metadata.get(SCOPE_KEY) if isinstance(metadata, dict) else None
    if declared is not None and declared != scope(connect):
        problems.append(f"scope {declared}, expected {scope(connect)}")
    return tuple(problems)


async def check_endpoints(
    gateway: Gateway, *, url: str, api_version: str, connect: bool
) -> list[EndpointCheck]:
    """Every endpoint of the key's mode that points at `url`, with its problems."""
    endpoints = await gateway.list_webhook_endpoints()
    return [
        EndpointCheck(
            id=str(endpoint.get("id")),
            problems=endpoint_problems(endpoint, api_version=api_version, connect=connect),
        )
        for endpoint in endpoints
        if endpoint.get("url") == url
    ]


def create_params(*, url: str, api_version: str, connect: bool) -> dict[str, Any]:
    params: dict[str, Any] = {
        "url": url,
        "api_version": api_version,
        "enabled_events": list(HANDLED_EVENTS),
        "description": "portal-service",
        "metadata": {SCOPE_KEY: scope(connect)},
    }
    if connect:
        params["connect"] = True
    return params


def idempotency_key(params: dict[str, Any]) -> str:
    """The same endpoint asked for twice (a rerun) is created once: Stripe replays the first
    answer for a key it saw within about a day."""
    digest = hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest()[:32]
    return f"portal-service-webhook-endpoint-{digest}"


async def create_endpoint(
    gateway: Gateway, *, url: str, api_version: str, connect: bool
) -> dict[str, Any]:
    params = create_params(url=url, api_version=api_version, connect=connect)
    return await gateway.create_webhook_endpoint(params, idempotency_key=idempotency_key(params))
