"""Offline mode (no STRIPE_API_KEY): a stateful local stand-in for Stripe and its hosted portal.

Its objects, portal sessions and emitted events live in the database (offline_tables), so
they survive restarts and every process on one database sees the same "Stripe". Each change
is written together with the events Stripe would send for it (an outbox, in Stripe's order),
then those events are signed and POSTed to this service's own /webhooks, in process, so
the mirror changes exactly as it would with Stripe. Re-fetches (sync, resync, a flow's
subscription or price) answer from the same state through the Gateway interface.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.db import utcnow
from portal_service.errors import StripeError
from portal_service.gateway import offline_objects as sim
from portal_service.gateway.base import (
    Fetched,
    ListKind,
    ListPage,
    ObjectKind,
    StripeIdempotencyConflict,
    StripeObjectMissing,
)
from portal_service.gateway.offline_page import OfflinePortal, token_hash
from portal_service.gateway.offline_tables import (
    OfflineFormNonce,
    OfflineIdempotency,
    OfflineObject,
    OfflineOutbox,
    OfflineSecret,
    OfflineSession,
)

if TYPE_CHECKING:
    from portal_service.config import Settings

_DEV_JWT_SECRET = "auth_jwt_secret"  # noqa: S105 - the name of a row, not a secret


def _portal_url(service_url: str, token: str) -> str:
    return f"{service_url.rstrip('/')}/offline/portal/{token}"


def _request_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def development_settings(settings: Settings) -> Settings:
    """Offline development without STRIPE_WEBHOOK_SECRETS: a generated secret, so the
    stand-in's signed events reach the mirror through the same verification as Stripe's.
    Never in production (which refuses offline mode) nor with a Stripe key."""
    if not settings.offline or settings.environment != "development":
        return settings
    if settings.stripe_webhook_secrets:
        return settings
    generated = SecretStr("whsec_offline_" + secrets.token_hex(24))
    return settings.model_copy(update={"stripe_webhook_secrets": [generated]})


MirroredObjects = Callable[[AsyncSession, str], Awaitable[list[dict[str, Any]] | None]]
"""A customer's payloads as the mirror holds them (the customer first), None if it holds none."""


class OfflineGateway(OfflinePortal):
    """The Gateway of offline mode (the portal page's side is OfflinePortal, its store
    OfflineStore)."""

    def __init__(
        self,
        database_url: str,
        *,
        api_version: str,
        app: Any = None,
        clock: Callable[[], datetime] = utcnow,
        mirrored: MirroredObjects | None = None,
    ) -> None:
        super().__init__(database_url, api_version=api_version, app=app, clock=clock)
        # What the mirror holds of a customer the stand-in does not know (mirror/adoption.py,
        # passed in by the app: the gateway reads no mirror table itself).
        self._mirrored = mirrored

    @property
    def offline(self) -> bool:
        return True

    @property
    def stand_in(self) -> OfflineGateway:
        return self

    # -- the Gateway interface ---------------------------------------------------------

    async def create_customer(
        self, *, email: str | None, app_user_id: str, idempotency_key: str
    ) -> dict[str, Any]:
        params = {"email": email, "metadata": {"app_user_id": app_user_id}}
        request_hash = _request_hash(params)
        for _ in range(2):
            async with self._sessions()() as session:
                known = await session.get(OfflineIdempotency, idempotency_key)
                if known is not None:
                    # Same key, same customer: the guarantee real Stripe gives racing requests.
                    if known.request_hash != request_hash:
                        raise StripeIdempotencyConflict()
                    row = await session.get(OfflineObject, known.object_id)
                    if row is not None:
                        return copy.deepcopy(row.object)
                customer = sim.customer_object(
                    email=email, name=None, app_user_id=app_user_id, created=self._now()
                )
                out = sim.Emitted()
                out.emit("customer.created", customer)
                try:
                    session.add(
                        OfflineIdempotency(
                            key=idempotency_key, request_hash=request_hash, object_id=customer["id"]
                        )
                    )
                    await session.flush()
                except IntegrityError:
                    await session.rollback()
                    continue
                await self._write(session, out)
                await session.commit()
            await self.deliver()
            return customer
        raise StripeError("Offline mode: a concurrent request holds this idempotency key.")

    async def create_portal_session(
        self, params: dict[str, Any], *, idempotency_key: str | None, service_url: str
    ) -> dict[str, Any]:
        request_hash = _request_hash(params)
        async with self._sessions()() as session:
            if idempotency_key is not None:
                replay = await self._session_replay(session, idempotency_key, request_hash)
                if replay is not None:
                    row, token = replay
                    return {**row.session, "url": _portal_url(service_url, token)}
            configuration = await self._configuration(session, params.get("configuration"))
            if configuration is None:
                raise StripeError(f"No such portal configuration: {params.get('configuration')}.")
            customer = await session.get(OfflineObject, str(params["customer"]))
            if customer is None:
                customer = await self._adopt(session, str(params["customer"]))
            if customer is None or customer.object.get("deleted"):
                raise StripeObjectMissing(f"No such customer: {params['customer']}.")
            created = self._now()
            token = secrets.token_urlsafe(32)
            portal_session = {
                "id": sim.new_id("bps"),
                "object": "billing_portal.session",
                "configuration": configuration["id"],
                "created": created,
                "customer": params["customer"],
                "flow": params.get("flow_data"),
                "livemode": False,
                "locale": params.get("locale"),
                "on_behalf_of": params.get("on_behalf_of"),
                "return_url": params.get("return_url") or configuration.get("default_return_url"),
            }
            session.add(
                OfflineSession(
                    id=portal_session["id"],
                    token_hash=token_hash(token),
                    replay_token=token if idempotency_key is not None else None,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    customer_id=str(params["customer"]),
                    session=portal_session,
                    csrf_token=secrets.token_urlsafe(24),
                    created=datetime.fromtimestamp(created, tz=utcnow().tzinfo),
                )
            )
            out = sim.Emitted()
            # The event carries no url: Stripe's does, but the outbox must never store one.
            out.emit("billing_portal.session.created", copy.deepcopy(portal_session))
            out.objects.clear()
            try:
                await self._write(session, out)
                await session.commit()
            except IntegrityError:
                await session.rollback()
                if idempotency_key is None:
                    raise
                replay = await self._session_replay(session, idempotency_key, request_hash)
                if replay is None:
                    raise
                row, token = replay
                return {**row.session, "url": _portal_url(service_url, token)}
        await self.deliver()
        return {**portal_session, "url": _portal_url(service_url, token)}

    async def _adopt(self, session: AsyncSession, customer_id: str) -> OfflineObject | None:
        """A customer the mirror holds but the stand-in does not (its events were signed and
        posted by hand): taken over, with the objects of it the mirror has payloads of, so
        its portal can be opened. No event is sent: the mirror has these already."""
        objects = await self._mirrored(session, customer_id) if self._mirrored else None
        if objects is None:
            return None
        out = sim.Emitted()
        out.objects = [o for o in objects if o.get("id") and o.get("object")]
        try:
            async with session.begin_nested():
                await self._write(session, out)
        except IntegrityError:
            pass  # adopted by a concurrent request meanwhile
        return await session.get(OfflineObject, customer_id)

    async def _session_replay(
        self, session: AsyncSession, key: str, request_hash: str
    ) -> tuple[OfflineSession, str] | None:
        result = await session.execute(
            select(OfflineSession).where(col(OfflineSession.idempotency_key) == key)
        )
        row = result.scalars().first()
        if row is None:
            return None
        # Stripe's rule: the same key with other parameters is refused, not replayed.
        if row.request_hash != request_hash:
            raise StripeIdempotencyConflict()
        if row.replay_token is None:
            raise StripeError("Offline mode: this session was opened already; use a new key.")
        return row, row.replay_token

    async def create_portal_configuration(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> Fetched:
        raise StripeError("Offline mode: portal configurations need STRIPE_API_KEY.")

    async def update_portal_configuration(
        self, configuration_id: str, params: dict[str, Any], *, idempotency_key: str
    ) -> Fetched:
        raise StripeError("Offline mode: portal configurations need STRIPE_API_KEY.")

    async def retrieve(self, kind: ObjectKind, object_id: str, *, account: str = "") -> Fetched:
        async with self._sessions()() as session:
            row = await session.get(OfflineObject, object_id)
        if row is None or row.kind != kind or account:
            raise StripeObjectMissing(f"Offline mode: no {kind} {object_id}.")
        return Fetched(object=copy.deepcopy(row.object), fetched_at=self._clock())

    async def list_active_entitlements(self, customer_id: str, *, account: str = "") -> Fetched:
        async with self._sessions()() as session:
            summary = await self._summary(session, customer_id)
        return Fetched(object=summary, fetched_at=self._clock())

    async def retrieve_thin_event(self, event_id: str, *, account: str = "") -> Fetched:
        # The stand-in sends snapshot events only: it holds no v2 (thin) events.
        raise StripeObjectMissing(f"Offline mode: no event {event_id} outside the mirror.")

    async def list_webhook_endpoints(self) -> list[dict[str, Any]]:
        raise StripeError("Offline mode: webhook endpoints need STRIPE_API_KEY.")

    async def create_webhook_endpoint(
        self, params: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        raise StripeError("Offline mode: webhook endpoints need STRIPE_API_KEY.")

    async def list_pages(
        self,
        kind: ListKind,
        *,
        params: dict[str, Any],
        customer: str | None = None,
        account: str = "",
    ) -> AsyncIterator[ListPage]:
        if account:
            return
        limit = int(params.get("limit") or 100)
        after = params.get("starting_after")
        async with self._sessions()() as session:
            objects = await self._listed(session, kind, params, customer)
        fetched_at = self._clock()
        if after is not None:
            ids = [str(o.get("id")) for o in objects]
            objects = objects[ids.index(after) + 1 :] if after in ids else []
        for start in range(0, len(objects), limit):
            yield ListPage(objects=objects[start : start + limit], fetched_at=fetched_at)

    async def _listed(
        self, session: AsyncSession, kind: ListKind, params: dict[str, Any], customer: str | None
    ) -> list[dict[str, Any]]:
        if kind == "event":
            rows = (
                (await session.execute(select(OfflineOutbox).order_by(col(OfflineOutbox.seq))))
                .scalars()
                .all()
            )
            events = [row.event for row in reversed(rows)]
            gte = (params.get("created") or {}).get("gte")
            return [e for e in events if gte is None or e["created"] >= gte]
        owner = customer or params.get("customer")
        objects = await self._objects(session, kind, customer=owner)
        if kind == "subscription" and params.get("status") != "all":
            objects = [o for o in objects if o.get("status") not in sim.ENDED_STATUSES]
        if kind == "customer":
            objects = [o for o in objects if not o.get("deleted")]
        gte = (params.get("created") or {}).get("gte")
        if gte is not None:
            objects = [o for o in objects if int(o.get("created") or 0) >= gte]
        return objects

    # -- demo data ----------------------------------------------------------------------

    async def has_data(self) -> bool:
        async with self._sessions()() as session:
            count = await session.scalar(select(func.count()).select_from(OfflineObject))
        return bool(count)

    async def reset(self) -> None:
        async with self._sessions()() as session:
            for table in (OfflineFormNonce, OfflineSession, OfflineIdempotency, OfflineOutbox):
                await session.execute(delete(table))
            await session.execute(delete(OfflineObject))
            await session.commit()

    async def store(self, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Store objects as Stripe would have created them, with their events (demo data)."""
        out = sim.Emitted()
        for event_type, obj in events:
            if event_type:
                out.emit(event_type, obj)
            else:
                out.objects.append(obj)
        await self._apply(out)

    async def development_secret(self, name: str = _DEV_JWT_SECRET) -> str:
        """A development secret kept in the database (generated on first use)."""
        async with self._sessions()() as session:
            row = await session.get(OfflineSecret, name)
            if row is not None:
                return row.value
            value = secrets.token_urlsafe(32)
            session.add(OfflineSecret(name=name, value=value))
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                row = await session.get(OfflineSecret, name)
                if row is None:
                    raise
                return row.value
        return value
