"""Demo data for offline development (README.md, "Offline mode"): app user `demo-user` with a
customer, an active subscription (one of two prices of a demo product, quantity 1), a card
and two paid invoices, created in the offline stand-in and delivered to the mirror as
Stripe's events; and the ready-to-paste request that opens its portal.

`portal-service demo-data [--reset]` runs it on demand; `portal-service serve` (so `make
run`) runs it on start-up into an empty database. Development and offline mode only.
"""

from __future__ import annotations

import asyncio
import copy
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import typer
from fastapi import FastAPI

from portal_service.access.facts import linked_customer
from portal_service.app_state import state_of
from portal_service.commands import fail
from portal_service.config import ConfigError, Settings
from portal_service.gateway import offline_objects as sim
from portal_service.gateway.offline import OfflineGateway
from portal_service.portal.customers import link_customer

AppBuilder = Callable[[Settings], FastAPI]
"""main.create_app, as the entry points pass it."""

DEMO_USER = "demo-user"
DEMO_EMAIL = "demo@example.com"
DEMO_PRODUCT = "prod_offline_demo_pro"
DEMO_PRICES = ("price_offline_pro_monthly", "price_offline_pro_yearly")
CANCEL_NOW_CONFIGURATION = "bpc_offline_cancel_now"
_DAY = 86_400
_TOKEN_LIFETIME = 12 * 3600


class DemoUnavailable(Exception):
    """Demo data needs development and offline mode (one line, for the CLI)."""


def check_demo_allowed(settings: Settings) -> None:
    if settings.environment != "development":
        raise DemoUnavailable(
            f"demo data is for ENVIRONMENT=development only (this is {settings.environment})"
        )
    if not settings.offline:
        raise DemoUnavailable("demo data needs offline mode: unset STRIPE_API_KEY")


def _catalogue(now: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    product = {
        "id": DEMO_PRODUCT,
        "object": "product",
        "active": True,
        "created": now,
        "livemode": False,
        # What the demo's Stripe Entitlements features would be (active_entitlement_summary).
        "metadata": {"features": "reports,exports"},
        "name": "Demo Pro",
    }
    prices = [
        {
            "id": price_id,
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": now,
            "currency": "eur",
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": nickname,
            "product": DEMO_PRODUCT,
            "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed"},
            "tax_behavior": "exclusive",
            "type": "recurring",
            "unit_amount": amount,
        }
        for price_id, nickname, interval, amount in (
            (DEMO_PRICES[0], "Monthly", "month", 900),
            (DEMO_PRICES[1], "Yearly", "year", 9000),
        )
    ]
    return product, prices


@dataclass(frozen=True, slots=True)
class DemoCustomer:
    customer_id: str
    subscription_id: str


async def seed(app: FastAPI, *, service_url: str, reset: bool = False) -> DemoCustomer | None:
    """Create the demo objects and deliver their events (the app's lifespan must run).
    None when the demo user already has a customer and `reset` is off."""
    gateway = state_of(app).gateway.stand_in
    if gateway is None:
        raise DemoUnavailable("demo data needs offline mode: unset STRIPE_API_KEY")
    async with state_of(app).sessionmaker() as session:
        current = await linked_customer(session, app_user_id=DEMO_USER, livemode=False)
    if current is not None and not reset:
        return None
    if reset:
        await _delete_everything(gateway)
    now = int(time.time())
    product, prices = _catalogue(now)
    default_return = f"{service_url.rstrip('/')}/offline/return"
    offered = [
        {
            "product": DEMO_PRODUCT,
            "prices": list(DEMO_PRICES),
            "adjustable_quantity": {"enabled": True, "minimum": 1, "maximum": sim.MAX_QUANTITY},
        }
    ]
    default_configuration = sim.configuration_object(
        sim.DEFAULT_CONFIGURATION,
        created=now,
        is_default=True,
        cancel_mode="at_period_end",
        products=offered,
        default_return_url=default_return,
    )
    cancel_now = sim.configuration_object(
        CANCEL_NOW_CONFIGURATION,
        created=now,
        is_default=False,
        cancel_mode="immediately",
        products=offered,
        default_return_url=default_return,
    )
    customer = sim.customer_object(
        email=DEMO_EMAIL, name="Demo User", app_user_id=DEMO_USER, created=now
    )
    customer["preferred_locales"] = ["en"]
    card = sim.card_object(
        customer_id=customer["id"],
        number="4242424242424242",
        exp_month=12,
        exp_year=time.gmtime(now).tm_year + 3,
        created=now,
    )
    with_card = copy.deepcopy(customer)
    with_card["invoice_settings"]["default_payment_method"] = card["id"]
    period_start = now - 10 * _DAY
    invoice_ids = (sim.new_id("in"), sim.new_id("in"))
    subscription = sim.subscription_object(
        customer_id=customer["id"],
        price=prices[0],
        quantity=1,
        created=period_start - 30 * _DAY,
        period_start=period_start,
        period_end=period_start + 30 * _DAY,
        latest_invoice=invoice_ids[1],
    )
    events: list[tuple[str, dict[str, Any]]] = [
        ("product.created", product),
        *(("price.created", price) for price in prices),
        ("billing_portal.configuration.created", default_configuration),
        ("billing_portal.configuration.created", cancel_now),
        ("customer.created", customer),
        ("payment_method.attached", card),
        ("customer.updated", with_card),
        ("customer.subscription.created", subscription),
    ]
    for number, (invoice_id, created) in enumerate(
        zip(invoice_ids, (period_start - 30 * _DAY, period_start), strict=True), start=1
    ):
        invoice = sim.invoice_object(
            invoice_id=invoice_id,
            customer_id=customer["id"],
            subscription_id=subscription["id"],
            amount=900,
            currency="eur",
            created=created,
            number=f"DEMO-{number:04d}",
        )
        # Stripe's life of a paid invoice: created as a draft, finalized, paid.
        draft = {**copy.deepcopy(invoice), "status": "draft", "amount_paid": 0}
        opened = {**copy.deepcopy(invoice), "status": "open", "amount_paid": 0}
        events += [
            ("invoice.created", draft),
            ("invoice.finalized", opened),
            ("invoice.paid", invoice),
        ]
    products = {DEMO_PRODUCT: product}
    events.append(
        (
            "entitlements.active_entitlement_summary.updated",
            sim.entitlement_summary(customer["id"], [subscription], products),
        )
    )
    await gateway.store(events)
    async with state_of(app).sessionmaker() as session:
        # The link a real app makes with PUT /users/{id}/customer: webhooks never set it.
        await link_customer(
            session, gateway, app_user_id=DEMO_USER, customer_id=customer["id"], livemode=False
        )
        await session.commit()
    return DemoCustomer(customer_id=customer["id"], subscription_id=subscription["id"])


async def _delete_everything(gateway: OfflineGateway) -> None:
    """What deleting the demo in Stripe sends (subscriptions, then customers deleted), then
    the stand-in is emptied."""
    events: list[tuple[str, dict[str, Any]]] = []
    now = int(time.time())
    async for page in gateway.list_pages("subscription", params={"status": "all"}):
        for sub in page.objects:
            if sub.get("status") not in sim.ENDED_STATUSES:
                ended = {**sub, "status": "canceled", "ended_at": now, "canceled_at": now}
                events.append(("customer.subscription.deleted", ended))
    async for page in gateway.list_pages("customer", params={}):
        for customer in page.objects:
            events.append(
                (
                    "customer.deleted",
                    {"id": customer["id"], "object": "customer", "deleted": True},
                )
            )
    if events:
        await gateway.store(events)
    await gateway.reset()


def demo_token(secret: str, *, now: int | None = None) -> str:
    issued = int(time.time()) if now is None else now
    payload = {
        "sub": DEMO_USER,
        "email": DEMO_EMAIL,
        "iat": issued,
        "exp": issued + _TOKEN_LIFETIME,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def curl_line(service_url: str, token: str) -> str:
    base = service_url.rstrip("/")
    return (
        f"curl -s -X POST {shlex.quote(base + '/portal-sessions')} "
        f"-H {shlex.quote('Authorization: Bearer ' + token)}"
    )


def announcement(settings: Settings, service_url: str) -> str:
    """The start-up lines: the request that opens the demo user's portal, and the docs."""
    assert settings.auth_jwt_secret is not None  # noqa: S101 - ensured by the caller
    token = demo_token(settings.auth_jwt_secret.get_secret_value())
    return (
        "Offline demo: open the demo user's billing portal (the answer's `url`, valid 5 "
        "minutes) with\n"
        f"  {curl_line(service_url, token)}\n"
        f"API docs: {service_url.rstrip('/')}/docs\n"
    )


async def development_auth(settings: Settings) -> Settings:
    """Offline development without end-user auth configured: AUTH_JWT_SECRET generated once
    and kept in the database, so the demo token works across restarts (never in production,
    never next to AUTH_JWKS_URL)."""
    if settings.auth_jwt_secret is not None or settings.auth_jwks_url is not None:
        return settings
    check_demo_allowed(settings)
    gateway = OfflineGateway(settings.database_url, api_version=settings.stripe_api_version)
    try:
        secret = await gateway.development_secret()
    finally:
        await gateway.aclose()
    from pydantic import SecretStr

    return settings.model_copy(update={"auth_jwt_secret": SecretStr(secret)})


async def run_demo(
    settings: Settings,
    build_app: AppBuilder,
    *,
    service_url: str,
    reset: bool,
    only_if_empty: bool,
) -> tuple[Settings, DemoCustomer | None]:
    """Seed through the whole app, in-process: `build_app` is main.create_app, passed in by
    the entry point (nothing below cli.py imports main)."""
    check_demo_allowed(settings)
    settings = await development_auth(settings)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        gateway = state_of(app).gateway.stand_in
        if gateway is None:  # check_demo_allowed saw offline settings: a gateway was passed
            raise DemoUnavailable("demo data needs offline mode: unset STRIPE_API_KEY")
        if only_if_empty and (await gateway.has_data() or await _mirror_has_data(app)):
            await gateway.deliver()
            return settings, None
        return settings, await seed(app, service_url=service_url, reset=reset)


async def _mirror_has_data(app: FastAPI) -> bool:
    from sqlalchemy import func, select

    from portal_service.mirror.tables import Customer

    async with state_of(app).sessionmaker() as session:
        return bool(await session.scalar(select(func.count()).select_from(Customer)))


def create_demo_data(build_app: AppBuilder, *, reset: bool, service_url: str) -> None:
    """`portal-service demo-data` (registered in cli.py, which passes main.create_app)."""
    from portal_service.commands import load_settings

    settings = load_settings()
    try:
        settings, created = asyncio.run(
            run_demo(settings, build_app, service_url=service_url, reset=reset, only_if_empty=False)
        )
    except (DemoUnavailable, ConfigError) as exc:
        raise fail(str(exc)) from None
    if created is None:
        typer.echo("demo data already present (use --reset to create it anew)")
    else:
        typer.echo(f"demo data created: customer {created.customer_id} for app user {DEMO_USER}")
    typer.echo(announcement(settings, service_url), nl=False)


def start_demo(settings: Settings, build_app: AppBuilder, *, host: str, port: int) -> None:
    """`serve` in offline development: seed an empty database, make the demo token's secret
    the served app's (through the environment, so every worker has it), print the request
    once. A database that is not migrated yet only gets a hint: serving goes on."""
    import os

    from portal_service.config import get_settings

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - a display name
    service_url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"
    try:
        # Quietly: the seeding's webhook lines would bury the request printed below; the
        # served app configures logging again with LOG_LEVEL.
        quiet = settings.model_copy(update={"log_level": "WARNING"})
        seeded, created = asyncio.run(
            run_demo(quiet, build_app, service_url=service_url, reset=False, only_if_empty=True)
        )
        settings = settings.model_copy(update={"auth_jwt_secret": seeded.auth_jwt_secret})
    except Exception as exc:  # a start-up hint, never a reason not to serve
        typer.echo(
            f"portal-service: no demo data ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "run `portal-service migrate` first",
            err=True,
        )
        return
    if settings.auth_jwt_secret is not None and "AUTH_JWT_SECRET" not in os.environ:
        os.environ["AUTH_JWT_SECRET"] = settings.auth_jwt_secret.get_secret_value()
        get_settings.cache_clear()
    if created is not None:
        typer.echo(f"demo data created: customer {created.customer_id} for app user {DEMO_USER}")
    typer.echo(announcement(settings, service_url), nl=False)
    # Printed before uvicorn starts logging: flush so it is not held in a pipe's buffer.
    import sys

    sys.stdout.flush()
