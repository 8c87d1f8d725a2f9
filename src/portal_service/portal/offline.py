"""Offline mode's stand-in for Stripe's hosted portal (DESIGN.md section 9): the page a
portal session URL opens when no STRIPE_API_KEY is set, showing the mirrored state.

The link is a bearer credential like Stripe's: signed by the offline gateway, valid five
minutes, never cached or sent on as a referrer. Everything shown is HTML-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from portal_service.access.facts import customer_subscriptions, subscription_items
from portal_service.db import ReadSession
from portal_service.errors import NotFound
from portal_service.gateway.offline import OfflineGateway
from portal_service.mirror.tables import Customer, Invoice, PaymentMethod, PortalSession

router = APIRouter()

# What OfflineGateway.sign_token produces: urlsafe base64 body, a dot, 32 hex digits.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,2048}\.[0-9a-f]{32}$")
_RECENT_INVOICES = 10
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;"
    "color:#1a1a1a}table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}"
    "th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ddd}"
    ".note{background:#fff8e1;padding:.75rem 1rem;border-radius:.4rem}"
)


def _claims(request: Request, token: str) -> dict[str, Any] | None:
    gateway = request.app.state.gateway
    if not isinstance(gateway, OfflineGateway) or not _TOKEN_RE.fullmatch(token):
        return None
    try:
        claims = gateway.read_token(token)
    except (ValueError, KeyError, TypeError):
        return None
    if claims is None or not isinstance(claims.get("c"), str):
        return None
    return claims


@router.get(
    "/offline/portal/{token}",
    response_class=HTMLResponse,
    include_in_schema=False,
)
async def offline_portal(
    request: Request,
    token: str,
    session: ReadSession,
) -> HTMLResponse:
    claims = _claims(request, token)
    if claims is None:
        raise NotFound("This portal link is invalid or has expired.")
    settings = request.app.state.settings
    body = await _render(
        session,
        customer_id=claims["c"],
        session_id=str(claims.get("s", "")),
        livemode=settings.livemode,
    )
    return HTMLResponse(body, headers=_HEADERS)


async def _render(
    session: AsyncSession, *, customer_id: str, session_id: str, livemode: bool
) -> str:
    customer = await session.get(Customer, customer_id)
    portal_session = await session.get(PortalSession, session_id) if session_id else None
    subscriptions = await customer_subscriptions(session, customer_id, livemode=livemode)
    items = await subscription_items(session, [s.id for s in subscriptions])
    methods = (
        (
            await session.execute(
                select(PaymentMethod)
                .where(
                    col(PaymentMethod.customer_id) == customer_id,
                    col(PaymentMethod.livemode) == livemode,
                    col(PaymentMethod.deleted).is_(False),
                )
                .order_by(col(PaymentMethod.stripe_created).desc())
            )
        )
        .scalars()
        .all()
    )
    invoices = (
        (
            await session.execute(
                select(Invoice)
                .where(
                    col(Invoice.customer_id) == customer_id,
                    col(Invoice.livemode) == livemode,
                    col(Invoice.deleted).is_(False),
                )
                .order_by(col(Invoice.stripe_created).desc(), col(Invoice.id).desc())
                .limit(_RECENT_INVOICES)
            )
        )
        .scalars()
        .all()
    )

    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        "<title>Billing (offline mode)</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Billing</h1>",
        "<p class='note'>Offline mode: no Stripe account is connected. This page shows the "
        "billing state mirrored by portal-service; nothing can be changed here.</p>",
        "<h2>Customer</h2>",
    ]
    email = customer.email if customer is not None else None
    name = customer.name if customer is not None else None
    parts.append(_table(("Customer", "Email", "Name"), [(customer_id, email or "—", name or "—")]))
    parts.append("<h2>Subscriptions</h2>")
    if subscriptions:
        rows = []
        for sub in subscriptions:
            products = ", ".join(
                f"{item.product_id or '?'} ({item.price_id or '?'}) x {item.quantity or 1}"
                for item in items[sub.id]
            )
            rows.append(
                (
                    sub.id,
                    sub.status or "—",
                    products or "—",
                    _date(sub.current_period_end),
                    "yes" if sub.cancel_at_period_end else "no",
                )
            )
        parts.append(
            _table(("Subscription", "Status", "Items", "Period ends", "Cancels at end"), rows)
        )
    else:
        parts.append("<p>No subscriptions.</p>")
    parts.append("<h2>Payment methods</h2>")
    parts.append(_payment_methods(methods))
    parts.append("<h2>Invoices</h2>")
    parts.append(_invoices(invoices))
    if portal_session is not None and portal_session.return_url:
        parts.append(f"<p><a href='{escape(portal_session.return_url)}'>Return</a></p>")
    parts.append("</body></html>")
    return "".join(parts)


def _payment_methods(methods: Sequence[PaymentMethod]) -> str:
    if not methods:
        return "<p>No payment methods.</p>"
    rows = [
        (
            method.type or "—",
            method.card_brand or "—",
            f"•••• {method.card_last4}" if method.card_last4 else "—",
            f"{method.card_exp_month:02d}/{method.card_exp_year}"
            if method.card_exp_month and method.card_exp_year
            else "—",
        )
        for method in methods
    ]
    return _table(("Type", "Brand", "Number", "Expires"), rows)


def _invoices(invoices: Sequence[Invoice]) -> str:
    if not invoices:
        return "<p>No invoices.</p>"
    rows = [
        (
            invoice.id,
            invoice.status or "—",
            _amount(invoice.amount_due, invoice.currency),
            _date(invoice.stripe_created),
        )
        for invoice in invoices
    ]
    return _table(("Invoice", "Status", "Amount due", "Created"), rows)


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value is not None else "—"


def _amount(minor: int | None, currency: str | None) -> str:
    if minor is None:
        return "—"
    return f"{minor / 100:.2f} {(currency or '').upper()}".strip()
