"""Test doubles of the portal tests: a Stripe fake for respx (it honours Idempotency-Key the
way Stripe does) and a helper to arrange and read mirror rows."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import respx
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, select

from portal_service.db import create_sessionmaker
from portal_service.mirror.tables import (
    Customer,
    PortalConfiguration,
    Subscription,
    SubscriptionItem,
)

STRIPE_API = "https://api.stripe.com"
STRIPE_KEY = "sk_test_123"
PORTAL_URL_PREFIX = "https://billing.stripe.com/p/session/test_"


@dataclass(frozen=True)
class SentRequest:
    """One request as the SDK put it on the wire."""

    method: str
    path: str
    headers: httpx.Headers
    form: dict[str, str]


def stripe_error(
    status: int, *, code: str | None = None, type_: str = "invalid_request_error", **headers: str
) -> httpx.Response:
    body: dict[str, Any] = {"error": {"type": type_, "message": f"Fake Stripe error {status}."}}
    if code is not None:
        body["error"]["code"] = code
    return httpx.Response(
        status, json=body, headers={"Request-Id": "req_error_" + str(status), **headers}
    )


@dataclass
class StripeFake:
    """Just enough of Stripe: customers, portal sessions, and retrievable objects.

    Same Idempotency-Key and parameters: the first answer again; same key, other
    parameters: 400 idempotency_error. `failures[path]` holds queued answers (responses
    or exceptions) served before the normal behaviour; `observers` see each request
    while the service is still waiting for the answer.
    """

    router: respx.MockRouter
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[SentRequest] = field(default_factory=list)
    failures: dict[str, list[httpx.Response | Exception]] = field(default_factory=dict)
    observers: list[Callable[[SentRequest], None]] = field(default_factory=list)
    _replays: dict[str, tuple[dict[str, str], httpx.Response]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.router.post(f"{STRIPE_API}/v1/customers").mock(side_effect=self._create_customer)
        self.router.post(f"{STRIPE_API}/v1/billing_portal/sessions").mock(
            side_effect=self._create_session
        )
        self.router.get(
            url__regex=rf"^{STRIPE_API}/v1/(?P<kind>customers|subscriptions|prices)/(?P<oid>[^/?]+)"
        ).mock(side_effect=self._retrieve)

    def sent(self, path: str, method: str | None = None) -> list[SentRequest]:
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]

    @property
    def sessions_sent(self) -> list[SentRequest]:
        return self.sent("/v1/billing_portal/sessions")

    @property
    def customers_sent(self) -> list[SentRequest]:
        return self.sent("/v1/customers", "POST")

    def fail_next(self, path: str, *answers: httpx.Response | Exception) -> None:
        self.failures.setdefault(path, []).extend(answers)

    def _record(self, request: httpx.Request) -> SentRequest:
        form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        sent = SentRequest(request.method, request.url.path, request.headers, form)
        self.requests.append(sent)
        for observer in self.observers:
            observer(sent)
        return sent

    def _queued(self, path: str) -> httpx.Response | None:
        queue = self.failures.get(path)
        if not queue:
            return None
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _idempotent(self, sent: SentRequest, make: Callable[[], httpx.Response]) -> httpx.Response:
        key = sent.headers.get("Idempotency-Key")
        if key is not None and key in self._replays:
            form, response = self._replays[key]
            if form != sent.form:
                return stripe_error(400, type_="idempotency_error")
            return httpx.Response(
                response.status_code,
                content=response.content,
                headers={**response.headers, "Idempotent-Replayed": "true"},
            )
        response = make()
        if key is not None:
            self._replays[key] = (sent.form, response)
        return response

    def _create_customer(self, request: httpx.Request) -> httpx.Response:
        sent = self._record(request)
        queued = self._queued(sent.path)
        if queued is not None:
            return queued

        def make() -> httpx.Response:
            customer = self.customer_object(
                f"cus_fake{next(self._ids)}",
                email=sent.form.get("email"),
                metadata={
                    k[len("metadata[") : -1]: v
                    for k, v in sent.form.items()
                    if k.startswith("metadata[")
                },
            )
            self.customers[customer["id"]] = customer
            return _ok(customer)

        return self._idempotent(sent, make)

    def _create_session(self, request: httpx.Request) -> httpx.Response:
        sent = self._record(request)
        queued = self._queued(sent.path)
        if queued is not None:
            return queued

        def make() -> httpx.Response:
            form = sent.form
            flow_type = form.get("flow_data[type]")
            session = {
                "id": f"bps_fake{next(self._ids)}",
                "object": "billing_portal.session",
                "configuration": form.get("configuration", "bpc_fake_default"),
                "created": int(time.time()),
                "customer": form["customer"],
                "flow": {"type": flow_type} if flow_type else None,
                "livemode": False,
                "locale": form.get("locale"),
                "on_behalf_of": None,
                "return_url": form.get("return_url"),
                "url": PORTAL_URL_PREFIX + secrets.token_urlsafe(16),
            }
            return _ok(session)

        return self._idempotent(sent, make)

    def _retrieve(self, request: httpx.Request, kind: str, oid: str) -> httpx.Response:
        sent = self._record(request)
        queued = self._queued(sent.path)
        if queued is not None:
            return queued
        store = {
            "customers": self.customers,
            "subscriptions": self.subscriptions,
            "prices": self.prices,
        }[kind]
        if oid not in store:
            return stripe_error(404, code="resource_missing")
        return _ok(store[oid])

    @staticmethod
    def customer_object(
        customer_id: str, *, email: str | None = None, metadata: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return {
            "id": customer_id,
            "object": "customer",
            "email": email,
            "name": None,
            "metadata": metadata or {},
            "created": int(time.time()),
            "livemode": False,
            "preferred_locales": [],
            "invoice_settings": {"default_payment_method": None},
        }


def _ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"Request-Id": "req_" + secrets.token_hex(6)})


class Mirror:
    """Arrange and read mirror rows, each call in its own committed transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessionmaker = create_sessionmaker(engine)

    async def add(self, *rows: SQLModel) -> None:
        async with self._sessionmaker() as session:
            session.add_all(rows)
            await session.commit()

    async def all(self, model: type[SQLModel], **where: Any) -> list[Any]:
        async with self._sessionmaker() as session:
            query = select(model)
            for name, value in where.items():
                query = query.where(getattr(model, name) == value)
            return list((await session.execute(query)).scalars().all())

    async def get(self, model: type[SQLModel], object_id: str) -> Any:
        async with self._sessionmaker() as session:
            return await session.get(model, object_id)

    async def update(self, model: type[SQLModel], object_id: str, **values: Any) -> None:
        async with self._sessionmaker() as session:
            row = await session.get(model, object_id)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)
            await session.commit()

    async def customer(
        self,
        customer_id: str,
        *,
        app_user_id: str | None = None,
        email: str | None = None,
        metadata: dict[str, str] | None = None,
        livemode: bool = False,
        deleted: bool = False,
        account: str = "",
    ) -> None:
        await self.add(
            Customer(
                id=customer_id,
                livemode=livemode,
                account=account,
                app_user_id=app_user_id,
                email=email,
                deleted=deleted,
                raw={"id": customer_id, "object": "customer", "metadata": metadata or {}},
            )
        )

    async def subscription(
        self,
        subscription_id: str,
        *,
        customer_id: str,
        status: str = "active",
        items: list[dict[str, Any]] | None = None,
        schedule_id: str | None = None,
        collection_method: str = "charge_automatically",
        livemode: bool = False,
    ) -> None:
        """`items`: dicts of SubscriptionItem columns; one licensed inclusive item by default."""
        now = datetime.now(UTC)
        items = items or [
            {
                "id": "si_" + subscription_id[4:],
                "price_id": "price_basic",
                "product_id": "prod_basic",
            }
        ]
        rows: list[SQLModel] = [
            Subscription(
                id=subscription_id,
                livemode=livemode,
                customer_id=customer_id,
                status=status,
                schedule_id=schedule_id,
                collection_method=collection_method,
                current_period_start=now - timedelta(days=3),
                current_period_end=now + timedelta(days=27),
                stripe_created=now - timedelta(days=3),
            )
        ]
        for item in items:
            values = {
                "quantity": 1,
                "usage_type": "licensed",
                "tax_behavior": "inclusive",
                "interval": "month",
                **item,
            }
            rows.append(
                SubscriptionItem(subscription_id=subscription_id, livemode=livemode, **values)
            )
        await self.add(*rows)

    async def configuration(
        self,
        configuration_id: str,
        *,
        is_default: bool = False,
        default_return_url: str | None = None,
        features: dict[str, Any] | None = None,
        livemode: bool = False,
    ) -> None:
        await self.add(
            PortalConfiguration(
                id=configuration_id,
                livemode=livemode,
                is_default=is_default,
                active=True,
                default_return_url=default_return_url,
                features=features or {},
            )
        )
