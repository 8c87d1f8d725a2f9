"""The entitlements answer (README.md, "Deciding access in your app") and its ETag, for apps that poll it.

The ETag hashes the body without `evaluated_at`: it changes exactly when the answer does,
including when an `access_until` passes and a product drops out with no event at all.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse, Response

from portal_service.access.facts import CustomerAccess
from portal_service.access.policy import AccessPolicy, access_until, grants_access
from portal_service.access.schemas import EntitledProduct, Entitlements
from portal_service.config import Settings
from portal_service.db import utcnow

ENTITLEMENTS_CACHE_CONTROL = "private, no-cache"

# An entity-tag (RFC 9110 section 8.8.3): optional weak prefix, then a quoted opaque tag
# that may itself contain commas, so a list is scanned tag by tag rather than split.
_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"\s*(?:,|$)')
# List elements may be empty (`"a", , "b"`): skip separators between tags.
_SEPARATORS = re.compile(r"[\s,]*")
# What json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) builds on every
# call, built once.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def access_policy(settings: Settings) -> AccessPolicy:
    return AccessPolicy(
        past_due_grace_days=settings.access_past_due_grace_days,
        access_during_paused_collection=settings.access_during_paused_collection,
    )


def evaluate_entitlements(
    customer: CustomerAccess | None, *, policy: AccessPolicy, now: datetime
) -> Entitlements:
    """What `customer` may use at `now`.

    Without a customer, the empty answer exactly as README.md, "Deciding access in your app", spells it: no
    `evaluated_at`, as nothing was evaluated.
    """
    if customer is None:
        return Entitlements(customer_id=None, has_access=False, products=[], features=[])
    products = [
        EntitledProduct(
            product_id=item.product_id,
            price_id=item.price_id,
            subscription_id=sub.id,
            status=sub.status,
            quantity=item.quantity,
            access_until=access_until(sub),
        )
        for sub in customer.subscriptions
        if grants_access(sub, policy=policy, now=now)
        for item in sub.items
    ]
    # A set in a fixed order: the same state always hashes to the same ETag.
    products.sort(key=lambda p: (p.product_id or "", p.price_id or "", p.subscription_id))
    return Entitlements(
        customer_id=customer.customer_id,
        has_access=bool(products),
        products=products,
        features=list(customer.features),
        evaluated_at=now,
    )


def entitlements_content(body: Entitlements) -> dict[str, Any]:
    """The JSON body as sent: `evaluated_at` only when there is one (not in the empty answer)."""
    exclude = {"evaluated_at"} if body.evaluated_at is None else None
    return body.model_dump(mode="json", exclude=exclude)


def entitlements_etag(body: Entitlements) -> str:
    """A strong ETag: SHA-256 of the canonical JSON of the body without `evaluated_at`."""
    return etag_of(entitlements_content(body))


def etag_of(content: dict[str, Any]) -> str:
    """The ETag of a rendered entitlements body (`evaluated_at`, if present, left out)."""
    canonical = _CANONICAL_JSON.encode({k: v for k, v in content.items() if k != "evaluated_at"})
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def entitlements_response(
    customer: CustomerAccess | None,
    policy: AccessPolicy,
    if_none_match: str | None,
    *,
    extra_headers: dict[str, str] | None = None,
) -> Response:
    """The entitlements answer with its ETag, or an empty 304 when the client's copy is current.

    Rendered here once, for the ETag and the body alike, rather than validated and
    serialised again by FastAPI.
    """
    content = entitlements_content(evaluate_entitlements(customer, policy=policy, now=utcnow()))
    etag = etag_of(content)
    headers = {"ETag": etag, "Cache-Control": ENTITLEMENTS_CACHE_CONTROL, **(extra_headers or {})}
    if none_match_hits(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(content, headers=headers)


def none_match_hits(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names the current representation (RFC 9110 section 13.1.2).

    Weak comparison, as the RFC requires for this header: `W/"x"` matches `"x"`. `*`
    matches any current representation. A malformed header matches nothing, so the
    client gets the full answer rather than a 304 it cannot explain.
    """
    if if_none_match is None:
        return False
    value = if_none_match.strip()
    if value == "*":
        return True
    opaque = etag.removeprefix("W/")
    position = 0
    while True:
        separators = _SEPARATORS.match(value, position)
        position = separators.end() if separators is not None else position
        if position == len(value):
            return False
        match = _ENTITY_TAG.match(value, position)
        if match is None:
            return False
        if f'"{match.group(1)}"' == opaque:
            return True
        position = match.end()


def entitlements_answer(
    customer_id: str, customer: CustomerAccess | None, *, policy: AccessPolicy, now: datetime
) -> dict[str, Any]:
    """The answer as JSON without `evaluated_at`: what changes exactly when the ETag does.
    A customer no longer live (deleted, or not mirrored yet) has the empty answer, under its
    own id, so a notification still says whose access ended."""
    if customer is None:
        return {"customer_id": customer_id, "has_access": False, "products": [], "features": []}
    content = entitlements_content(evaluate_entitlements(customer, policy=policy, now=now))
    content.pop("evaluated_at", None)
    return content
