"""Fixtures of the access tests: mirror rows arranged directly, with realistic defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from portal_service.db import utcnow
from portal_service.mirror.tables import (
    Customer,
    Entitlement,
    Invoice,
    PaymentMethod,
    Subscription,
    SubscriptionItem,
    TaxId,
)


@dataclass
class MirrorRows:
    """Builds and commits mirror rows; each `stripe_created` is one minute after the last,
    so lists have a known newest-first order without spelling out every timestamp."""

    db: AsyncSession
    now: datetime = field(default_factory=utcnow)
    _clock: int = 0

    def _created(self) -> datetime:
        self._clock += 1
        return self.now - timedelta(days=30) + timedelta(minutes=self._clock)

    async def add(self, *rows: Any) -> None:
        self.db.add_all(rows)
        await self.db.commit()

    async def customer(
        self, id: str = "cus_a", *, app_user_id: str | None = "user_a", **fields: Any
    ) -> Customer:
        values: dict[str, Any] = {
            "email": f"{app_user_id or id}@example.com",
            "name": "Ada Lovelace",
            "stripe_created": self._created(),
            "preferred_locales": ["en"],
            "tax_exempt": "none",
        }
        row = Customer(id=id, app_user_id=app_user_id, **(values | fields))
        await self.add(row)
        return row

    async def subscription(
        self,
        id: str = "sub_a",
        *,
        customer_id: str = "cus_a",
        items: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> Subscription:
        """A subscription with its items: one licensed monthly item unless `items` says."""
        values: dict[str, Any] = {
            "status": "active",
            "collection_method": "charge_automatically",
            "current_period_start": self.now - timedelta(days=10),
            "current_period_end": self.now + timedelta(days=20),
            "stripe_created": self._created(),
        }
        values |= fields
        row = Subscription(id=id, customer_id=customer_id, **values)
        item_rows = [
            SubscriptionItem(
                **(
                    {
                        "id": f"si_{id}_{n}",
                        "subscription_id": id,
                        "price_id": "price_basic",
                        "product_id": "prod_basic",
                        "quantity": 1,
                        "usage_type": "licensed",
                        "tax_behavior": "exclusive",
                        "interval": "month",
                        "current_period_start": values["current_period_start"],
                        "current_period_end": values["current_period_end"],
                        "stripe_created": values["stripe_created"],
                        "livemode": values.get("livemode", False),
                        "account": values.get("account", ""),
                    }
                    | item
                )
            )
            for n, item in enumerate(items if items is not None else [{}])
        ]
        await self.add(row, *item_rows)
        return row

    async def invoice(
        self, id: str = "in_a", *, customer_id: str = "cus_a", **fields: Any
    ) -> Invoice:
        values: dict[str, Any] = {
            "status": "paid",
            "currency": "eur",
            "amount_due": 1200,
            "amount_paid": 1200,
            "hosted_invoice_url": f"https://invoice.stripe.com/i/{id}",
            "stripe_created": self._created(),
        }
        row = Invoice(id=id, customer_id=customer_id, **(values | fields))
        await self.add(row)
        return row

    async def payment_method(
        self, id: str = "pm_a", *, customer_id: str | None = "cus_a", **fields: Any
    ) -> PaymentMethod:
        values: dict[str, Any] = {
            "type": "card",
            "card_brand": "visa",
            "card_last4": "4242",
            "card_exp_month": 12,
            "card_exp_year": 2030,
            "stripe_created": self._created(),
        }
        row = PaymentMethod(id=id, customer_id=customer_id, **(values | fields))
        await self.add(row)
        return row

    async def tax_id(
        self, id: str = "txi_a", *, customer_id: str = "cus_a", **fields: Any
    ) -> TaxId:
        values: dict[str, Any] = {
            "type": "eu_vat",
            "value": "DE123456789",
            "verification_status": "verified",
            "stripe_created": self._created(),
        }
        row = TaxId(id=id, customer_id=customer_id, **(values | fields))
        await self.add(row)
        return row

    async def entitlement(
        self, lookup_key: str | None, *, customer_id: str = "cus_a", **fields: Any
    ) -> Entitlement:
        row = Entitlement(
            id=fields.pop("id", f"ent_{customer_id}_{lookup_key}"),
            customer_id=customer_id,
            feature_id=f"feat_{lookup_key}",
            lookup_key=lookup_key,
            **fields,
        )
        await self.add(row)
        return row

    async def update(self, row: Any, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(row, name, value)
        await self.add(row)


@pytest.fixture
def rows(db: AsyncSession) -> MirrorRows:
    return MirrorRows(db)


@pytest.fixture
def tenants(rows: MirrorRows) -> Callable[..., Any]:
    """`await tenants()`: user_a and user_b, each with a customer and one of everything."""

    async def build() -> None:
        for who in ("a", "b"):
            await rows.customer(
                f"cus_{who}", app_user_id=f"user_{who}", default_payment_method=f"pm_{who}"
            )
            await rows.subscription(f"sub_{who}", customer_id=f"cus_{who}")
            await rows.invoice(f"in_{who}", customer_id=f"cus_{who}", subscription_id=f"sub_{who}")
            await rows.payment_method(f"pm_{who}", customer_id=f"cus_{who}")
            await rows.tax_id(f"txi_{who}", customer_id=f"cus_{who}")
            await rows.entitlement(f"feature-{who}", customer_id=f"cus_{who}")

    return build
