"""The offline portal page's side of the stand-in: its sessions (Stripe's lifetimes), the
forms' CSRF tokens and one-time nonces, what a page shows for a session, and the actions
it performs (offline_subscriptions.py, offline_customers.py) through the store.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.db import utcnow
from portal_service.gateway import offline_customers as customers
from portal_service.gateway import offline_objects as sim
from portal_service.gateway import offline_subscriptions as subs
from portal_service.gateway.offline_store import OfflineStore
from portal_service.gateway.offline_subscriptions import PortalRules
from portal_service.gateway.offline_tables import OfflineFormNonce, OfflineObject, OfflineSession
from portal_service.ops.logging import get_logger

log = get_logger("portal_service.offline")

# Stripe's portal session lifetimes: 5 minutes unused, 1 hour after the last activity, and
# (for the stand-in, so no link lives forever) 2 hours at most.
UNUSED_LIFETIME = timedelta(minutes=5)
IDLE_LIFETIME = timedelta(hours=1)
MAX_LIFETIME = timedelta(hours=2)


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


class OfflinePortal(OfflineStore):
    """The state behind the offline portal page."""

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
            if used.rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult for an UPDATE
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

    async def act(
        self, state: PortalState, action: str, fields: dict[str, str], *, rules: PortalRules
    ) -> None:
        """Perform one portal action for the session's customer, under the portal's rules
        (handed in by the page: portal/offline_rules.py). Raises ActionRefused."""
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
                out = subs.cancel_subscription(
                    sub,
                    configuration,
                    rules=rules,
                    now=now,
                    reason=fields.get("reason") or None,
                    mode=fields.get("mode", ""),
                )
            elif action == "reactivate":
                out = subs.reactivate_subscription(sub, configuration, rules=rules)
            elif action == "update":
                out = subs.update_subscription(
                    sub,
                    configuration,
                    state.prices,
                    rules=rules,
                    quantity=_int_field(fields, "quantity"),
                    price_id=fields.get("price") or None,
                )
            else:
                out = subs.pause_collection(
                    sub, configuration, rules=rules, pause=action == "pause"
                )
        elif action == "add_card":
            if not sim.feature(configuration, "payment_method_update"):
                raise sim.ActionRefused("feature_disabled", "Cards cannot be changed here.")
            out = customers.add_card(
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
                out = customers.set_default_card(customer, method)
            else:
                live = any(s.get("status") not in sim.ENDED_STATUSES for s in state.subscriptions)
                out = customers.remove_card(customer, method, has_live_subscription=live)
        elif action == "update_customer":
            if not sim.feature(configuration, "customer_update"):
                raise sim.ActionRefused("feature_disabled", "Your details cannot be changed here.")
            out = customers.update_customer(customer, configuration, fields)
        elif action == "add_tax_id":
            out = customers.add_tax_id(
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
            out = customers.remove_tax_id(customer, configuration, tax_id)
        else:
            raise sim.ActionRefused("unknown_action", "This action does not exist.", status=422)
        await self._apply(out, touched_customer=customer["id"])
        log.info("offline_portal_action", action=action, customer_id=customer["id"])


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
