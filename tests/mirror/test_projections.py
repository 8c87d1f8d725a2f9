"""Each handled event type lands in its table (ARCHITECTURE.md, "Adding a new event type")."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mirror.stripe_payloads import (
    CREATED,
    PERIOD_END,
    PERIOD_START,
    customer,
    entitlement_summary,
    invoice,
    item,
    payment_method,
    portal_configuration,
    portal_session,
    subscription,
    tax_id,
    utc,
)
from portal_service.db import create_sessionmaker
from portal_service.mirror.tables import (
    Customer,
    Entitlement,
    EntitlementSummary,
    Invoice,
    PaymentMethod,
    PortalConfiguration,
    PortalSession,
    Subscription,
    SubscriptionItem,
    TaxId,
)
from support import deliver, make_event

T0 = 1_760_000_000


async def send(
    client: httpx.AsyncClient, event_type: str, obj: dict[str, Any], created: int
) -> str:
    response = await deliver(client, make_event(event_type, obj, created=created))
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


@pytest.mark.sqlite
class TestCustomerProjection:
    async def test_customer_fields_are_mirrored(self, client: httpx.AsyncClient, rows: Any) -> None:
        obj = customer(invoice_settings={"default_payment_method": "pm_9"})
        assert await send(client, "customer.created", obj, T0) == "processed"
        row = await rows.get(Customer, "cus_1")
        assert (row.email, row.name, row.tax_exempt) == ("ada@example.com", "Ada", "none")
        assert row.default_payment_method == "pm_9"
        assert row.address == {"country": "FR", "city": "Paris"}
        assert row.preferred_locales == ["fr"]
        assert row.stripe_created == utc(CREATED)
        assert (row.source_ts, row.deleted, row.app_user_id) == (utc(T0), False, None)
        assert row.raw["id"] == "cus_1"

    async def test_webhooks_never_set_app_user_id(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, "customer.created", customer(metadata={"app_user_id": "user_1"}), T0)
        assert (await rows.get(Customer, "cus_1")).app_user_id is None

    async def test_update_keeps_the_linked_app_user(
        self, client: httpx.AsyncClient, rows: Any, engine: Any
    ) -> None:
        async with create_sessionmaker(engine)() as session:
            session.add(Customer(id="cus_1", app_user_id="user_1", email="old@example.com"))
            await session.commit()
        await send(client, "customer.updated", customer(metadata={"app_user_id": "user_2"}), T0)
        row = await rows.get(Customer, "cus_1")
        assert (row.app_user_id, row.email) == ("user_1", "ada@example.com")

    async def test_deletion_tombstones_and_unlinks_touching_nothing_else(
        self, client: httpx.AsyncClient, rows: Any, engine: Any
    ) -> None:
        async with create_sessionmaker(engine)() as session:
            session.add(Customer(id="cus_1", app_user_id="user_1"))
            await session.commit()
        await send(client, "customer.subscription.created", subscription(), T0)
        assert await send(client, "customer.deleted", customer(), T0 + 5) == "processed"
        row = await rows.get(Customer, "cus_1")
        assert (row.deleted, row.app_user_id, row.email) == (True, None, "ada@example.com")
        sub = await rows.get(Subscription, "sub_1")
        assert (sub.deleted, sub.status) == (False, "active")


@pytest.mark.sqlite
class TestSubscriptionProjection:
    @pytest.mark.parametrize("shape", ["old", "new"])
    async def test_period_and_fields_from_either_payload_shape(
        self, client: httpx.AsyncClient, rows: Any, shape: str
    ) -> None:
        obj = subscription(
            shape=shape,  # type: ignore[arg-type]
            cancel_at_period_end=True,
            default_payment_method="pm_2",
            latest_invoice="in_7",
            schedule="sub_sched_1",
            trial_start=CREATED,
            trial_end=PERIOD_START,
            pause_collection={"behavior": "void", "resumes_at": PERIOD_END},
        )
        await send(client, "customer.subscription.created", obj, T0)
        row = await rows.get(Subscription, "sub_1")
        assert (row.current_period_start, row.current_period_end) == (
            utc(PERIOD_START),
            utc(PERIOD_END),
        )
        assert (row.customer_id, row.status, row.cancel_at_period_end) == ("cus_1", "active", True)
        assert (row.default_payment_method, row.latest_invoice_id) == ("pm_2", "in_7")
        assert row.schedule_id == "sub_sched_1"
        assert (row.trial_start, row.trial_end) == (utc(CREATED), utc(PERIOD_START))
        assert (row.pause_collection_behavior, row.pause_resumes_at) == ("void", utc(PERIOD_END))
        assert row.collection_method == "charge_automatically"
        (only,) = await rows.all(SubscriptionItem, subscription_id="sub_1")
        assert (only.current_period_start, only.current_period_end) == (
            utc(PERIOD_START),
            utc(PERIOD_END),
        )

    async def test_new_shape_period_is_the_earliest_over_items(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        later = item(
            "si_2", price_id="price_b", period_start=PERIOD_START + 10, period_end=PERIOD_END + 10
        )
        obj = subscription(items=[later, item("si_1")])
        await send(client, "customer.subscription.created", obj, T0)
        row = await rows.get(Subscription, "sub_1")
        assert (row.current_period_start, row.current_period_end) == (
            utc(PERIOD_START),
            utc(PERIOD_END),
        )

    async def test_items_are_replaced_as_a_set(self, client: httpx.AsyncClient, rows: Any) -> None:
        first = subscription(
            items=[item("si_1"), item("si_2", price_id="price_b", product="prod_b")]
        )
        await send(client, "customer.subscription.created", first, T0)
        second = subscription(
            items=[item("si_2", price_id="price_b", product="prod_b", quantity=3), item("si_3")]
        )
        await send(client, "customer.subscription.updated", second, T0 + 1)
        items = {i.id: i for i in await rows.all(SubscriptionItem, subscription_id="sub_1")}
        assert set(items) == {"si_2", "si_3"}
        assert (items["si_2"].quantity, items["si_2"].product_id) == (3, "prod_b")
        assert (items["si_3"].price_id, items["si_3"].usage_type) == ("price_pro", "licensed")
        assert (items["si_3"].tax_behavior, items["si_3"].interval) == ("exclusive", "month")
        assert items["si_3"].source_ts == utc(T0 + 1)

    async def test_truncated_item_list_keeps_unlisted_items(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(
            client,
            "customer.subscription.created",
            subscription(items=[item("si_1"), item("si_2")]),
            T0,
        )
        truncated = subscription(items=[item("si_2")])
        truncated["items"]["has_more"] = True
        await send(client, "customer.subscription.updated", truncated, T0 + 1)
        assert {i.id for i in await rows.all(SubscriptionItem)} == {"si_1", "si_2"}

    @pytest.mark.parametrize(
        "event_type",
        [
            "customer.subscription.paused",
            "customer.subscription.resumed",
            "customer.subscription.trial_will_end",
            "customer.subscription.pending_update_applied",
            "customer.subscription.pending_update_expired",
        ],
    )
    async def test_other_subscription_events_carry_the_subscription(
        self, client: httpx.AsyncClient, rows: Any, event_type: str
    ) -> None:
        await send(client, "customer.subscription.created", subscription(), T0)
        assert await send(client, event_type, subscription(status="paused"), T0 + 1) == "processed"
        assert (await rows.get(Subscription, "sub_1")).status == "paused"

    async def test_deleted_subscription_is_canceled_and_tombstoned(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, "customer.subscription.created", subscription(), T0)
        canceled = subscription(status="canceled", ended_at=T0 + 1, canceled_at=T0 + 1)
        await send(client, "customer.subscription.deleted", canceled, T0 + 1)
        row = await rows.get(Subscription, "sub_1")
        assert (row.status, row.deleted, row.ended_at) == ("canceled", True, utc(T0 + 1))

    async def test_unknown_status_is_stored_as_sent(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, "customer.subscription.created", subscription(status="hibernating"), T0)
        assert (await rows.get(Subscription, "sub_1")).status == "hibernating"


@pytest.mark.sqlite
class TestInvoiceProjection:
    @pytest.mark.parametrize("shape", ["old", "new"])
    async def test_subscription_id_and_paid_at_from_either_shape(
        self, client: httpx.AsyncClient, rows: Any, shape: str
    ) -> None:
        obj = invoice(shape=shape, status="paid", paid_at=T0)  # type: ignore[arg-type]
        await send(client, "invoice.paid", obj, T0)
        row = await rows.get(Invoice, "in_1")
        assert (row.subscription_id, row.customer_id, row.status) == ("sub_1", "cus_1", "paid")
        assert (row.paid_at, row.amount_due, row.amount_paid) == (utc(T0), 1500, 1500)
        assert (row.currency, row.hosted_invoice_url) == (
            "eur",
            "https://invoice.stripe.com/i/in_1",
        )

    async def test_invoice_outside_a_subscription(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, "invoice.created", invoice(subscription=None, status="draft"), T0)
        assert (await rows.get(Invoice, "in_1")).subscription_id is None

    @pytest.mark.parametrize(
        "event_type",
        [
            "invoice.created",
            "invoice.finalized",
            "invoice.paid",
            "invoice.payment_failed",
            "invoice.payment_succeeded",
            "invoice.updated",
            "invoice.voided",
            "invoice.marked_uncollectible",
        ],
    )
    async def test_every_invoice_event_is_projected(
        self, client: httpx.AsyncClient, rows: Any, event_type: str
    ) -> None:
        assert await send(client, event_type, invoice(), T0) == "processed"
        assert (await rows.get(Invoice, "in_1")).status == "open"

    async def test_deleted_draft_is_tombstoned(self, client: httpx.AsyncClient, rows: Any) -> None:
        await send(client, "invoice.created", invoice(status="draft"), T0)
        await send(client, "invoice.deleted", invoice(status="draft"), T0 + 1)
        assert (await rows.get(Invoice, "in_1")).deleted is True


@pytest.mark.sqlite
class TestPaymentMethodProjection:
    async def test_attached_card(self, client: httpx.AsyncClient, rows: Any) -> None:
        await send(client, "payment_method.attached", payment_method(), T0)
        row = await rows.get(PaymentMethod, "pm_1")
        assert (row.customer_id, row.type, row.card_brand, row.card_last4) == (
            "cus_1",
            "card",
            "visa",
            "4242",
        )
        assert (row.card_exp_month, row.card_exp_year) == (12, 2030)

    @pytest.mark.parametrize("customer_in_payload", [None, "cus_1"])
    async def test_detach_clears_the_customer(
        self, client: httpx.AsyncClient, rows: Any, customer_in_payload: str | None
    ) -> None:
        await send(client, "payment_method.attached", payment_method(), T0)
        await send(
            client, "payment_method.detached", payment_method(customer=customer_in_payload), T0 + 1
        )
        row = await rows.get(PaymentMethod, "pm_1")
        assert (row.customer_id, row.deleted) == (None, False)

    @pytest.mark.parametrize(
        "event_type", ["payment_method.updated", "payment_method.automatically_updated"]
    )
    async def test_card_updates(
        self, client: httpx.AsyncClient, rows: Any, event_type: str
    ) -> None:
        await send(client, "payment_method.attached", payment_method(), T0)
        card = {"brand": "visa", "last4": "1881", "exp_month": 1, "exp_year": 2031}
        await send(client, event_type, payment_method(card=card), T0 + 1)
        assert (await rows.get(PaymentMethod, "pm_1")).card_last4 == "1881"

    async def test_non_card_method(self, client: httpx.AsyncClient, rows: Any) -> None:
        await send(
            client, "payment_method.attached", payment_method(type="sepa_debit", card=None), T0
        )
        row = await rows.get(PaymentMethod, "pm_1")
        assert (row.type, row.card_brand) == ("sepa_debit", None)


@pytest.mark.sqlite
class TestTaxIdProjection:
    async def test_created_updated_deleted(self, client: httpx.AsyncClient, rows: Any) -> None:
        await send(client, "customer.tax_id.created", tax_id(), T0)
        verified = tax_id(verification={"status": "verified"})
        await send(client, "customer.tax_id.updated", verified, T0 + 1)
        row = await rows.get(TaxId, "txi_1")
        assert (row.customer_id, row.type, row.value) == ("cus_1", "eu_vat", "FR12345678901")
        assert row.verification_status == "verified"
        await send(client, "customer.tax_id.deleted", verified, T0 + 2)
        assert (await rows.get(TaxId, "txi_1")).deleted is True


@pytest.mark.sqlite
class TestPortalProjection:
    async def test_configuration_created_and_updated(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, "billing_portal.configuration.created", portal_configuration(), T0)
        await send(
            client,
            "billing_portal.configuration.updated",
            portal_configuration(active=False, is_default=False, name="Old"),
            T0 + 1,
        )
        row = await rows.get(PortalConfiguration, "bpc_1")
        assert (row.active, row.is_default, row.name) == (False, False, "Old")
        assert row.default_return_url == "https://app.example.com/account"
        assert row.features == {"invoice_history": {"enabled": True}}
        assert row.business_profile["headline"] == "Acme"
        assert row.config_metadata == {"plan": "pro"}

    async def test_session_created_is_recorded_without_url(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        await send(client, "billing_portal.session.created", portal_session(), T0)
        row = await rows.get(PortalSession, "bps_1")
        assert (row.customer_id, row.configuration_id, row.locale) == ("cus_1", "bpc_1", "fr")
        assert (row.flow_type, row.return_url) == (
            "subscription_cancel",
            "https://app.example.com/account",
        )
        assert row.created == utc(CREATED)
        assert "url" not in row.raw

    async def test_session_event_keeps_what_the_portal_route_recorded(
        self, client: httpx.AsyncClient, rows: Any, engine: Any
    ) -> None:
        async with create_sessionmaker(engine)() as session:
            session.add(
                PortalSession(
                    id="bps_1",
                    customer_id="cus_1",
                    app_user_id="user_1",
                    caller="u:0123456789abcdef",
                    idempotency_key_hash="k" * 64,
                    request_hash="r" * 64,
                    created=utc(CREATED + 1),
                )
            )
            await session.commit()
        await send(client, "billing_portal.session.created", portal_session(), T0)
        row = await rows.get(PortalSession, "bps_1")
        assert (row.app_user_id, row.caller) == ("user_1", "u:0123456789abcdef")
        assert (row.idempotency_key_hash, row.request_hash) == ("k" * 64, "r" * 64)
        assert row.created == utc(CREATED + 1)
        assert (row.locale, row.source_ts) == ("fr", utc(T0))


@pytest.mark.sqlite
class TestEntitlementProjection:
    async def test_summary_replaces_the_set(self, client: httpx.AsyncClient, rows: Any) -> None:
        kind = "entitlements.active_entitlement_summary.updated"
        await send(client, kind, entitlement_summary("cus_1", "seats", "sso"), T0)
        await send(client, kind, entitlement_summary("cus_2", "seats"), T0)
        await send(client, kind, entitlement_summary("cus_1", "sso", "audit"), T0 + 1)
        keys = {e.lookup_key for e in await rows.all(Entitlement, customer_id="cus_1")}
        assert keys == {"sso", "audit"}
        assert {e.lookup_key for e in await rows.all(Entitlement, customer_id="cus_2")} == {"seats"}
        summary = await rows.get(EntitlementSummary, "cus_1")
        assert summary.source_ts == utc(T0 + 1)

    async def test_empty_summary_removes_every_feature(
        self, client: httpx.AsyncClient, rows: Any
    ) -> None:
        kind = "entitlements.active_entitlement_summary.updated"
        await send(client, kind, entitlement_summary("cus_1", "seats"), T0)
        await send(client, kind, entitlement_summary("cus_1"), T0 + 1)
        assert await rows.all(Entitlement, customer_id="cus_1") == []
        assert (await rows.get(EntitlementSummary, "cus_1")).source_ts == utc(T0 + 1)

    async def test_older_summary_is_stale(self, client: httpx.AsyncClient, rows: Any) -> None:
        kind = "entitlements.active_entitlement_summary.updated"
        await send(client, kind, entitlement_summary("cus_1", "new"), T0 + 1)
        assert await send(client, kind, entitlement_summary("cus_1", "old"), T0) == "stale"
        assert [e.lookup_key for e in await rows.all(Entitlement)] == ["new"]
