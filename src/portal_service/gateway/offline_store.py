"""The offline stand-in's store: its objects in the database (offline_tables), each change
written with the events Stripe would send for it (an outbox, in Stripe's order), and the
delivery of those events, signed, to this service's own /webhooks (offline.py's docstring).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col, select

from portal_service.app_state import state_of
from portal_service.db import create_engine, create_sessionmaker, utcnow
from portal_service.gateway import offline_objects as sim
from portal_service.gateway.offline_tables import OfflineObject, OfflineOutbox
from portal_service.gateway.signatures import sign
from portal_service.ops.logging import get_logger

log = get_logger("portal_service.offline")


def _object_customer(obj: dict[str, Any]) -> str | None:
    if obj.get("object") == "customer":
        return str(obj["id"])
    customer = obj.get("customer")
    return customer if isinstance(customer, str) else None


_DELIVERY_ATTEMPTS = 3


class OfflineStore:
    """The stand-in's objects and outbox, on its own engine (built on first use)."""

    def __init__(
        self,
        database_url: str,
        *,
        api_version: str,
        app: Any = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._database_url = database_url
        self._api_version = api_version
        self._engine: AsyncEngine | None = None
        self._sessionmaker: async_sessionmaker[AsyncSession] | None = None
        # The ASGI app whose /webhooks receives the events (None: they wait in the outbox).
        self.app = app
        self._clock = clock

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    def _sessions(self) -> async_sessionmaker[AsyncSession]:
        # Built on first use: the gateway may be created before the event loop runs.
        if self._sessionmaker is None:
            self._engine = create_engine(self._database_url)
            self._sessionmaker = create_sessionmaker(self._engine)
        return self._sessionmaker

    def _now(self) -> int:
        return int(self._clock().timestamp())

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
