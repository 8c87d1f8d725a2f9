"""Idempotency-Key of POST /portal-sessions: the key Stripe sees, the hashes recorded with the
session, and whether a request replays one within the window."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.auth import ApiKeyCaller, EndUser
from portal_service.errors import IdempotencyKeyExpired, IdempotencyKeyReused
from portal_service.mirror.tables import PortalSession
from portal_service.portal.schemas import PortalSessionRequest

# An unused portal session lives 5 minutes: a replay after that would hand out a dead link.
IDEMPOTENCY_WINDOW = timedelta(minutes=5)
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    stripe_key: str  # `<caller>:<key>`, what Stripe sees
    key_hash: str
    request_hash: str

    @classmethod
    def build(
        cls, *, caller: EndUser | ApiKeyCaller, key: str, canonical_request: str
    ) -> IdempotencyKey:
        stripe_key = f"{caller.caller}:{key}"
        return cls(
            stripe_key=stripe_key,
            key_hash=hashlib.sha256(stripe_key.encode()).hexdigest(),
            request_hash=hashlib.sha256(canonical_request.encode()).hexdigest(),
        )


def canonical_request(body: PortalSessionRequest, *, locale: str) -> str:
    """The validated request as canonical JSON: absent and null are the same, key order and
    whitespace do not matter, and the negotiated locale counts as part of the request."""
    document = {"request": body.model_dump(mode="json", exclude_none=True), "locale": locale}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


async def is_replay(session: AsyncSession, key: IdempotencyKey, *, now: datetime) -> bool:
    result = await session.execute(
        select(PortalSession.created, PortalSession.request_hash).where(
            col(PortalSession.idempotency_key_hash) == key.key_hash
        )
    )
    prior = result.first()
    if prior is None:
        return False
    created, request_hash = prior
    if now - created > IDEMPOTENCY_WINDOW:
        raise IdempotencyKeyExpired()
    if request_hash != key.request_hash:
        raise IdempotencyKeyReused()
    return True
