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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr
from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col, select

from portal_service.app_state import state_of
from portal_service.db import create_engine, create_sessionmaker, utcnow
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
from portal_service.gateway.offline_tables import (
    OfflineFormNonce,
    OfflineIdempotency,
    OfflineObject,
    OfflineOutbox,
    OfflineSecret,
    OfflineSession,
)
from portal_service.gateway.signatures import sign
from portal_service.ops.logging import get_logger

if TYPE_CHECKING:
    from portal_service.config import Settings

log = get_logger("portal_service.offline")

# Stripe's portal session lifetimes: 5 minutes unused, 1 hour after the last activity, and
# (for the stand-in, so no link lives forever) 2 hours at most.
UNUSED_LIFETIME = timedelta(minutes=5)
IDLE_LIFETIME = timedelta(hours=1)
MAX_LIFETIME = timedelta(hours=2)
_DELIVERY_ATTEMPTS = 3
_DEV_JWT_SECRET = "auth_jwt_secret"  # noqa: S105 - the name of a row, not a secret


class SessionUnavailable(Exception):
    """The portal link is unknown (forged) or expired; `expired` tells which."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


class FormRejected(Exception):
    """A form the page must refuse: `reason` is `csrf`, `replayed` or `invalid`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PortalState:
    """Everything the portal page shows for one session, read from the stand-in."""

    session_id: str
    session: dict[str, Any]
    csrf_token: str
    customer: dict[str, Any]
    configuration: dict[str, Any]
    subscriptions: list[dict[str, Any]]
    payment_methods: list[dict[str, Any]]
    invoices: list[dict[str, Any]]
    tax_ids: list[dict[str, Any]]
    prices: dict[str, dict[str, Any]]
    products: dict[str, dict[str, Any]]
    completed: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _portal_url(service_url: str, token: str) -> str:
    return f"{service_url.rstrip('/')}/offline/portal/{token}"


def _request_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def _object_customer(obj: dict[str, Any]) -> str | None:
    if obj.get("object") == "customer":
        return str(obj["id"])
    customer = obj.get("customer")
    return customer if isinstance(customer, str) else None


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


class OfflineGateway:
    """The Gateway of offline mode, and the state behind the offline portal page."""

    def __init__(
        self,
        database_url: str,
        *,
        api_version: str,
        app: Any = None,
        clock: Callable[[], datetime] = utcnow,
        mirrored: MirroredObjects | None = None,
    ) -> None:
        self._database_url = database_url
        self._api_version = api_version
        self._engine: AsyncEngine | None = None
        self._sessionmaker: async_sessionmaker[AsyncSession] | None = None
        # The ASGI app whose /webhooks receives the events (None: they wait in the outbox).
        self.app = app
        self._clock = clock
        # What the mirror holds of a customer the stand-in does not know (mirror/adoption.py,
        # passed in by the app: the gateway reads no mirror table itself).
        self._mirrored = mirrored

    @property
    def offline(self) -> bool:
        return True

    @property
    def stand_in(self) -> OfflineGateway:
        return self

    def _sessions(self) -> async_sessionmaker[AsyncSession]:
        # Built on first use: the gateway may be created before the event loop runs.
        if self._sessionmaker is None:
            self._engine = create_engine(self._database_url)
            self._sessionmaker = create_sessionmaker(self._engine)
        return self._sessionmaker

    def _now(self) -> int:
        return int(self._clock().timestamp())

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

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

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

    # -- state ----------------------------------------------------------------------------

    async def _objects(
        self, session: AsyncSession, kind: str, *, customer: str | None = None
    ) -> list[dict[str, Any]]:
        query = select(OfflineObject).where(col(OfflineObject.kind) == kind)
        if customer is not None:
            query = query.where(col(OfflineObject.customer_id) == customer)
        query = query.order_by(col(OfflineObject.created).desc(), col(OfflineObject.id).desc())
        return [copy.deepcopy(row.object) for row in (await session.execute(query)).scalars()]

    async def _configuration(
        self, session: AsyncSession, configuration_id: str | None
    ) -> dict[str, Any] | None:
        if configuration_id is not None:
            row = await session.get(OfflineObject, configuration_id)
            return copy.deepcopy(row.object) if row is not None else None
        for configuration in await self._objects(session, "billing_portal.configuration"):
            if configuration.get("is_default") and configuration.get("active", True):
                return configuration
        # No configuration yet (a database that was never seeded): Stripe creates the
        # mode's default one on first use of the portal, and so does the stand-in.
        prices = await self._objects(session, "price")
        default = sim.default_configuration(created=self._now(), prices=prices)
        out = sim.Emitted()
        out.emit("billing_portal.configuration.created", default)
        try:
            async with session.begin_nested():
                await self._write(session, out)
        except IntegrityError:
            # A concurrent first session created it: use that one.
            row = await session.get(OfflineObject, sim.DEFAULT_CONFIGURATION)
            if row is None:
                raise
            return copy.deepcopy(row.object)
        return default

    async def _summary(self, session: AsyncSession, customer_id: str) -> dict[str, Any]:
        subscriptions = await self._objects(session, "subscription", customer=customer_id)
        products = {p["id"]: p for p in await self._objects(session, "product")}
        return sim.entitlement_summary(customer_id, subscriptions, products)

    async def _write(self, session: AsyncSession, out: sim.Emitted) -> None:
        """Store the changed objects and queue their events, in one transaction."""
        now = utcnow()
        for obj in out.objects:
            kind = str(obj.get("object"))
            row = await session.get(OfflineObject, str(obj["id"]))
            if kind == "tax_id" and obj.get("deleted"):
                if row is not None:
                    await session.delete(row)
                continue
            if row is None:
                session.add(
                    OfflineObject(
                        id=str(obj["id"]),
                        kind=kind,
                        customer_id=_object_customer(obj),
                        object=obj,
                        created=datetime.fromtimestamp(int(obj.get("created") or 0), tz=now.tzinfo),
                        updated_at=now,
                    )
                )
            else:
                row.object = copy.deepcopy(obj)
                # A detached payment method keeps its owner here, so it is listed nowhere.
                row.customer_id = _object_customer(obj)
                row.updated_at = now
        created = self._now()
        for event_type, obj, previous in out.events:
            event = sim.make_event(
                event_type, obj, created=created, api_version=self._api_version, previous=previous
            )
            session.add(OfflineOutbox(event_id=event["id"], event=event))
        await session.flush()

    async def _apply(self, out: sim.Emitted, *, touched_customer: str | None = None) -> None:
        """Write an action's objects and events, and an entitlement update when the
        customer's active features changed; then deliver."""
        async with self._sessions()() as session:
            before = await self._summary(session, touched_customer) if touched_customer else None
            await self._write(session, out)
            if touched_customer is not None:
                after = await self._summary(session, touched_customer)
                if before is not None and after["entitlements"] != before["entitlements"]:
                    summary_out = sim.Emitted()
                    summary_out.events.append(
                        ("entitlements.active_entitlement_summary.updated", after, None)
                    )
                    await self._write(session, summary_out)
            await session.commit()
        await self.deliver()

    async def deliver(self) -> int:
        """POST the undelivered events, oldest first, to this service's /webhooks, signed
        with its first webhook secret; the number delivered. An event the intake refuses
        stays queued and is tried again on the next delivery, as Stripe retries."""
        app = self.app
        if app is None:
            return 0
        secrets_ = state_of(app).settings.stripe_webhook_secrets
        if not secrets_:
            log.warning("offline_events_not_delivered", reason="no STRIPE_WEBHOOK_SECRETS")
            return 0
        secret = secrets_[0].get_secret_value()
        async with self._sessions()() as session:
            rows = (
                (
                    await session.execute(
                        select(OfflineOutbox)
                        .where(col(OfflineOutbox.delivered_at).is_(None))
                        .order_by(col(OfflineOutbox.seq))
                    )
                )
                .scalars()
                .all()
            )
            pending = [(row.seq, row.event) for row in rows]
        delivered = 0
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://offline.local"
        ) as client:
            for seq, event in pending:
                body = json.dumps(event, separators=(",", ":")).encode()
                ok = False
                for _ in range(_DELIVERY_ATTEMPTS):
                    header = sign(body, secret, timestamp=int(time.time()))
                    response = await client.post(
                        "/webhooks",
                        content=body,
                        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
                    )
                    if response.is_success:
                        ok = True
                        break
                async with self._sessions()() as session:
                    values: dict[str, Any] = {"attempts": col(OfflineOutbox.attempts) + 1}
                    if ok:
                        values["delivered_at"] = utcnow()
                    await session.execute(
                        update(OfflineOutbox).where(col(OfflineOutbox.seq) == seq).values(values)
                    )
                    await session.commit()
                if not ok:
                    # Later events may depend on this one: keep Stripe's order, stop here.
                    log.warning("offline_event_not_delivered", event_id=event["id"])
                    break
                delivered += 1
        return delivered

    # -- the portal page's side -----------------------------------------------------------

    def _expired(self, row: OfflineSession) -> bool:
        now = self._clock()
        if now - row.created > MAX_LIFETIME:
            return True
        if row.last_activity is None:
            return now - row.created > UNUSED_LIFETIME
        return now - row.last_activity > IDLE_LIFETIME

    async def _live_session(self, session: AsyncSession, token: str) -> OfflineSession:
        result = await session.execute(
            select(OfflineSession).where(col(OfflineSession.token_hash) == token_hash(token))
        )
        row = result.scalars().first()
        if row is None:
            raise SessionUnavailable(expired=False)
        if self._expired(row):
            raise SessionUnavailable(expired=True)
        return row

    async def open_session(self, token: str) -> PortalState:
        """The session's state, counting this as activity. Raises SessionUnavailable."""
        async with self._sessions()() as session:
            row = await self._live_session(session, token)
            row.last_activity = self._clock()
            # Used once: an Idempotency-Key can no longer replay the link.
            row.replay_token = None
            state = await self._state(session, row)
            await session.commit()
        return state

    async def _state(self, session: AsyncSession, row: OfflineSession) -> PortalState:
        customer_row = await session.get(OfflineObject, row.customer_id)
        if customer_row is None or customer_row.object.get("deleted"):
            raise SessionUnavailable(expired=False)
        configuration = await self._configuration(session, row.session.get("configuration"))
        if configuration is None:
            raise SessionUnavailable(expired=False)
        subscriptions = await self._objects(session, "subscription", customer=row.customer_id)
        prices = {p["id"]: p for p in await self._objects(session, "price")}
        products = {p["id"]: p for p in await self._objects(session, "product")}
        return PortalState(
            session_id=row.id,
            session=copy.deepcopy(row.session),
            csrf_token=row.csrf_token,
            customer=copy.deepcopy(customer_row.object),
            configuration=configuration,
            subscriptions=subscriptions,
            payment_methods=await self._objects(
                session, "payment_method", customer=row.customer_id
            ),
            invoices=(await self._objects(session, "invoice", customer=row.customer_id))[:10],
            tax_ids=await self._objects(session, "tax_id", customer=row.customer_id),
            prices=prices,
            products=products,
            completed=row.completed,
        )

    async def issue_nonce(self, session_id: str) -> str:
        nonce = secrets.token_urlsafe(24)
        async with self._sessions()() as session:
            session.add(OfflineFormNonce(nonce=nonce, session_id=session_id))
            await session.commit()
        return nonce

    async def accept_form(self, token: str, *, csrf: str, nonce: str) -> PortalState:
        """Check a submitted form against its session and use up its nonce (so a replayed
        form is refused); the state to act on. Raises SessionUnavailable, FormRejected."""
        async with self._sessions()() as session:
            row = await self._live_session(session, token)
            if not secrets.compare_digest(row.csrf_token.encode(), csrf.encode()):
                raise FormRejected("csrf")
            used = await session.execute(
                update(OfflineFormNonce)
                .where(
                    col(OfflineFormNonce.nonce) == nonce,
                    col(OfflineFormNonce.session_id) == row.id,
                    col(OfflineFormNonce.used_at).is_(None),
                )
                .values(used_at=utcnow())
            )
            if used.rowcount != 1:  # type: ignore[attr-defined]
                await session.rollback()
                raise FormRejected("replayed")
            row.last_activity = self._clock()
            state = await self._state(session, row)
            await session.commit()
        return state

    async def complete(self, session_id: str) -> None:
        async with self._sessions()() as session:
            await session.execute(
                update(OfflineSession)
                .where(col(OfflineSession.id) == session_id)
                .values(completed=True)
            )
            await session.commit()

    async def act(self, state: PortalState, action: str, fields: dict[str, str]) -> None:
        """Perform one portal action for the session's customer. Raises ActionRefused."""
        customer = state.customer
        configuration = state.configuration
        now = self._now()
        out: sim.Emitted
        if action in {"cancel", "reactivate", "update", "pause", "resume"}:
            sub = _find(state.subscriptions, fields.get("subscription"))
            if sub is None:
                raise sim.ActionRefused(
                    "no_such_subscription", "There is no such subscription.", status=404
                )
            if action == "cancel":
                out = sim.cancel_subscription(
                    sub,
                    configuration,
                    now=now,
                    reason=fields.get("reason") or None,
                    mode=fields.get("mode", ""),
                )
            elif action == "reactivate":
                out = sim.reactivate_subscription(sub, configuration)
            elif action == "update":
                out = sim.update_subscription(
                    sub,
                    configuration,
                    state.prices,
                    quantity=_int_field(fields, "quantity"),
                    price_id=fields.get("price") or None,
                )
            else:
                out = sim.pause_collection(sub, configuration, pause=action == "pause")
        elif action == "add_card":
            if not sim.feature(configuration, "payment_method_update"):
                raise sim.ActionRefused("feature_disabled", "Cards cannot be changed here.")
            out = sim.add_card(
                customer,
                number=fields.get("number", ""),
                exp_month=_int_field(fields, "exp_month") or 0,
                exp_year=_int_field(fields, "exp_year") or 0,
                now=now,
                this_year=self._clock().year,
                make_default=fields.get("make_default") == "on",
            )
        elif action in {"default_card", "remove_card"}:
            if not sim.feature(configuration, "payment_method_update"):
                raise sim.ActionRefused("feature_disabled", "Cards cannot be changed here.")
            method = _find(state.payment_methods, fields.get("payment_method"))
            if method is None:
                raise sim.ActionRefused("no_such_card", "There is no such card.", status=404)
            if action == "default_card":
                out = sim.set_default_card(customer, method)
            else:
                live = any(s.get("status") not in sim.ENDED_STATUSES for s in state.subscriptions)
                out = sim.remove_card(customer, method, has_live_subscription=live)
        elif action == "update_customer":
            if not sim.feature(configuration, "customer_update"):
                raise sim.ActionRefused("feature_disabled", "Your details cannot be changed here.")
            out = sim.update_customer(customer, configuration, fields)
        elif action == "add_tax_id":
            out = sim.add_tax_id(
                customer,
                configuration,
                tax_type=fields.get("tax_type", ""),
                value=fields.get("tax_value", ""),
                now=now,
            )
        elif action == "remove_tax_id":
            tax_id = _find(state.tax_ids, fields.get("tax_id"))
            if tax_id is None:
                raise sim.ActionRefused("no_such_tax_id", "There is no such tax id.", status=404)
            out = sim.remove_tax_id(customer, configuration, tax_id)
        else:
            raise sim.ActionRefused("unknown_action", "This action does not exist.", status=422)
        await self._apply(out, touched_customer=customer["id"])
        log.info("offline_portal_action", action=action, customer_id=customer["id"])

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


def _find(objects: list[dict[str, Any]], object_id: str | None) -> dict[str, Any] | None:
    return next((o for o in objects if object_id and o.get("id") == object_id), None)


def _int_field(fields: dict[str, str], name: str) -> int | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise sim.ActionRefused(
            f"invalid_{name}_field", f"{name} must be a whole number.", status=422
        ) from None
