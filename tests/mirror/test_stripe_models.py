import copy
import datetime as dt
import decimal
import json
from typing import Any

import pytest
import stripe
from pydantic import BaseModel, ValidationError

from portal_service.mirror.stripe_models import (
    ActiveEntitlementSummary,
    Customer,
    Event,
    Invoice,
    PaymentMethod,
    PortalConfiguration,
    PortalSession,
    Price,
    Subscription,
    TaxId,
    redact_session_urls,
    to_jsonable,
)

CREATED = 1_730_000_000  # 2024-10-27T03:33:20Z
PERIOD_START = 1_730_419_200  # 2024-11-01T00:00:00Z
PERIOD_END = 1_733_011_200  # 2024-12-01T00:00:00Z
LATER_END = 1_735_689_600  # 2025-01-01T00:00:00Z


def utc(ts: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def price_payload(**overrides: Any) -> dict[str, Any]:
    price: dict[str, Any] = {
        "id": "price_pro_monthly",
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": CREATED,
        "currency": "eur",
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": "prod_pro",
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tax_behavior": "exclusive",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": 1500,
        "unit_amount_decimal": "1500",
    }
    price.update(overrides)
    return price


def item_payload(item_id: str, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": CREATED,
        "discounts": [],
        "metadata": {},
        "price": price_payload(),
        "quantity": 1,
        "subscription": "sub_1",
        "tax_rates": [],
    }
    item.update(overrides)
    return item


def old_subscription() -> dict[str, Any]:
    """A customer.subscription.updated object as API version 2024-06-20 sends it."""
    return {
        "id": "sub_1",
        "object": "subscription",
        "application": None,
        "billing_cycle_anchor": PERIOD_START,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": CREATED,
        "currency": "eur",
        "current_period_end": PERIOD_END,
        "current_period_start": PERIOD_START,
        "customer": "cus_1",
        "default_payment_method": "pm_1",
        "discount": None,
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [item_payload("si_1", plan={"id": "price_pro_monthly", "object": "plan"})],
            "has_more": False,
            "total_count": 1,
            "url": "/v1/subscription_items?subscription=sub_1",
        },
        "latest_invoice": "in_1",
        "livemode": False,
        "metadata": {"app_user_id": "user_42"},
        "pause_collection": None,
        "schedule": None,
        "start_date": CREATED,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
    }


def new_subscription() -> dict[str, Any]:
    """The same subscription under 2026-10-28.endive: the period lives on each item."""
    return {
        "id": "sub_1",
        "object": "subscription",
        "billing_cycle_anchor": PERIOD_START,
        "billing_mode": {"type": "flexible", "flexible": {"proration_discounts": "included"}},
        "cancel_at": None,
        "cancel_at_period_end": True,
        "canceled_at": PERIOD_START + 3600,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": CREATED,
        "currency": "eur",
        "customer": "cus_1",
        "customer_account": None,
        "default_payment_method": None,
        "discounts": [],
        "ended_at": None,
        "items": {
            "object": "list",
            "data": [
                item_payload(
                    "si_1", current_period_start=PERIOD_START, current_period_end=LATER_END
                ),
                item_payload(
                    "si_2",
                    current_period_start=PERIOD_START + 86_400,
                    current_period_end=PERIOD_END,
                    quantity=None,
                    price=price_payload(
                        id="price_api_calls",
                        product="prod_api",
                        recurring={"interval": "month", "usage_type": "metered"},
                    ),
                ),
            ],
            "has_more": False,
            "total_count": 2,
            "url": "/v1/subscription_items?subscription=sub_1",
        },
        "latest_invoice": "in_1",
        "livemode": False,
        "metadata": {},
        "pause_collection": {"behavior": "void", "resumes_at": LATER_END},
        "schedule": None,
        "start_date": CREATED,
        "status": "active",
        "status_details": None,
        "trial_end": None,
        "trial_start": None,
    }


def old_invoice() -> dict[str, Any]:
    """An invoice.paid object as API version 2024-06-20 sends it."""
    return {
        "id": "in_1",
        "object": "invoice",
        "amount_due": 1500,
        "amount_paid": 1500,
        "amount_remaining": 0,
        "charge": "ch_1",
        "created": CREATED,
        "currency": "eur",
        "customer": "cus_1",
        "discount": None,
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_abc",
        "livemode": False,
        "paid": True,
        "payment_intent": "pi_1",
        "status": "paid",
        "status_transitions": {
            "finalized_at": PERIOD_START,
            "marked_uncollectible_at": None,
            "paid_at": PERIOD_START + 60,
            "voided_at": None,
        },
        "subscription": "sub_1",
        "subscription_details": {"metadata": {}},
    }


def new_invoice() -> dict[str, Any]:
    """The same invoice under 2026-10-28.endive: the subscription moved under `parent`."""
    return {
        "id": "in_1",
        "object": "invoice",
        "amount_due": 1500,
        "amount_overpaid": 0,
        "amount_paid": 1500,
        "amount_remaining": 0,
        "created": CREATED,
        "currency": "eur",
        "customer": "cus_1",
        "customer_account": None,
        "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1/test_abc",
        "livemode": False,
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": {},
                "subscription": "sub_1",
                "subscription_proration_date": None,
            },
        },
        "payments": {"object": "list", "data": [], "has_more": False},
        "status": "paid",
        "status_transitions": {
            "finalized_at": PERIOD_START,
            "marked_uncollectible_at": None,
            "paid_at": PERIOD_START + 60,
            "voided_at": None,
        },
    }


def portal_session() -> dict[str, Any]:
    return {
        "id": "bps_1",
        "object": "billing_portal.session",
        "configuration": "bpc_1",
        "created": CREATED,
        "customer": "cus_1",
        "customer_account": None,
        "flow": {
            "type": "subscription_cancel",
            "after_completion": {"type": "portal_homepage"},
            "subscription_cancel": {"subscription": "sub_1", "retention": None},
        },
        "livemode": False,
        "locale": "fr",
        "on_behalf_of": None,
        "return_url": "https://app.example.com/account",
        "url": "https://billing.stripe.com/p/session/test_secret_token",
    }


def event(obj: dict[str, Any], event_type: str, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "evt_1",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": CREATED + 5,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_1", "idempotency_key": "k:abc"},
        "type": event_type,
    }
    payload.update(overrides)
    return payload


class TestStripeTimestamp:
    def test_unix_seconds_become_aware_utc(self) -> None:
        sub = Subscription.model_validate(old_subscription())
        assert sub.created == dt.datetime(2024, 10, 27, 3, 33, 20, tzinfo=dt.UTC)
        assert sub.created is not None
        assert sub.created.utcoffset() == dt.timedelta(0)

    def test_aware_datetime_is_normalised_to_utc(self) -> None:
        paris = dt.timezone(dt.timedelta(hours=1))
        sub = Subscription.model_validate(
            {"id": "sub_1", "created": utc(CREATED).astimezone(paris)}
        )
        assert sub.created == utc(CREATED)
        assert sub.created is not None
        assert sub.created.tzinfo == dt.UTC

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("2024-10-27T03:33:20Z", id="iso-string"),
            pytest.param(True, id="bool"),
            pytest.param(dt.datetime(2024, 10, 27), id="naive"),  # noqa: DTZ001
            pytest.param(10**20, id="out-of-range"),
        ],
    )
    def test_rejects_what_is_not_a_unix_timestamp(self, value: Any) -> None:
        with pytest.raises(ValidationError, match="created"):
            Subscription.model_validate({"id": "sub_1", "created": value})


class TestSubscription:
    @pytest.mark.parametrize(
        ("payload", "start", "end"),
        [
            pytest.param(old_subscription(), PERIOD_START, PERIOD_END, id="2024-06-20"),
            # Earliest over the items: si_1 starts first, si_2 ends first.
            pytest.param(new_subscription(), PERIOD_START, PERIOD_END, id="2026-10-28.endive"),
        ],
    )
    def test_period_from_either_shape(self, payload: dict[str, Any], start: int, end: int) -> None:
        sub = Subscription.model_validate(payload)
        assert sub.period_start == utc(start)
        assert sub.period_end == utc(end)

    def test_old_shape_prefers_the_subscription_period_over_items(self) -> None:
        payload = old_subscription()
        payload["items"]["data"][0]["current_period_end"] = LATER_END
        assert Subscription.model_validate(payload).period_end == utc(PERIOD_END)

    def test_new_shape_keeps_item_periods(self) -> None:
        sub = Subscription.model_validate(new_subscription())
        assert sub.current_period_end is None
        assert [i.current_period_end for i in sub.items.data] == [utc(LATER_END), utc(PERIOD_END)]

    def test_no_period_anywhere_is_none(self) -> None:
        sub = Subscription.model_validate({"id": "sub_1", "items": {"data": []}})
        assert sub.period_start is None
        assert sub.period_end is None

    def test_reads_the_fields_the_access_policy_needs(self) -> None:
        sub = Subscription.model_validate(new_subscription())
        assert sub.customer == "cus_1"
        assert sub.status == "active"
        assert sub.cancel_at_period_end is True
        assert sub.canceled_at == utc(PERIOD_START + 3600)
        assert sub.pause_collection is not None
        assert sub.pause_collection.behavior == "void"
        assert sub.pause_collection.resumes_at == utc(LATER_END)
        assert sub.collection_method == "charge_automatically"
        assert sub.latest_invoice == "in_1"
        metered = sub.items.data[1]
        assert metered.quantity is None
        assert metered.price is not None
        assert metered.price.product == "prod_api"
        assert metered.price.recurring is not None
        assert metered.price.recurring.usage_type == "metered"
        licensed = sub.items.data[0].price
        assert licensed is not None
        assert licensed.tax_behavior == "exclusive"

    def test_unknown_status_and_fields_are_tolerated(self) -> None:
        payload = new_subscription()
        payload["status"] = "hibernating"
        payload["brand_new_field"] = {"nested": [1, 2, 3]}
        payload["pause_collection"]["behavior"] = "pause_softly"
        payload["items"]["data"][0]["price"]["recurring"]["usage_type"] = "prepaid"
        sub = Subscription.model_validate(payload)
        assert sub.status == "hibernating"
        assert sub.pause_collection is not None
        assert sub.pause_collection.behavior == "pause_softly"
        assert "brand_new_field" not in sub.model_dump()

    def test_nulls_take_the_defaults(self) -> None:
        sub = Subscription.model_validate(
            {"id": "sub_1", "cancel_at_period_end": None, "metadata": None, "items": None}
        )
        assert sub.cancel_at_period_end is False
        assert sub.metadata == {}
        assert sub.items.data == []

    def test_id_is_required(self) -> None:
        with pytest.raises(ValidationError, match="id"):
            Subscription.model_validate({"object": "subscription", "status": "active"})

    def test_models_are_read_only(self) -> None:
        sub = Subscription.model_validate(old_subscription())
        with pytest.raises(ValidationError, match="frozen"):
            sub.status = "canceled"  # type: ignore[misc]


class TestExpandableId:
    @pytest.mark.parametrize(
        ("field", "expanded"),
        [
            ("customer", {"id": "cus_1", "object": "customer", "email": "a@example.com"}),
            ("customer", {"id": "cus_1", "object": "customer", "deleted": True}),
            ("default_payment_method", {"id": "pm_1", "object": "payment_method"}),
            ("latest_invoice", {"id": "in_1", "object": "invoice", "status": "open"}),
            ("schedule", {"id": "sub_sched_1", "object": "subscription_schedule"}),
        ],
    )
    def test_expanded_object_and_id_give_the_same_id(
        self, field: str, expanded: dict[str, Any]
    ) -> None:
        by_id = Subscription.model_validate({"id": "sub_1", field: expanded["id"]})
        by_object = Subscription.model_validate({"id": "sub_1", field: expanded})
        assert getattr(by_object, field) == getattr(by_id, field) == expanded["id"]

    def test_expanded_product_on_a_price(self) -> None:
        price = Price.model_validate(price_payload(product={"id": "prod_pro", "name": "Pro"}))
        assert price.product == "prod_pro"

    def test_expanded_invoice_subscription_in_both_shapes(self) -> None:
        old = old_invoice()
        old["subscription"] = old_subscription()
        new = new_invoice()
        new["parent"]["subscription_details"]["subscription"] = new_subscription()
        assert Invoice.model_validate(old).subscription_id == "sub_1"
        assert Invoice.model_validate(new).subscription_id == "sub_1"

    @pytest.mark.parametrize("value", [{"object": "customer"}, {"id": ""}, {"id": 42}, 42], ids=str)
    def test_rejects_references_without_an_id(self, value: Any) -> None:
        with pytest.raises(ValidationError, match="customer"):
            Subscription.model_validate({"id": "sub_1", "customer": value})


class TestInvoice:
    @pytest.mark.parametrize(
        "payload",
        [pytest.param(old_invoice(), id="2024-06-20"), pytest.param(new_invoice(), id="endive")],
    )
    def test_subscription_id_and_paid_at_from_either_shape(self, payload: dict[str, Any]) -> None:
        invoice = Invoice.model_validate(payload)
        assert invoice.subscription_id == "sub_1"
        assert invoice.paid_at == utc(PERIOD_START + 60)
        assert (invoice.status, invoice.amount_paid, invoice.currency) == ("paid", 1500, "eur")

    @pytest.mark.parametrize(
        "parent",
        [
            pytest.param(None, id="no-parent"),
            pytest.param({"type": "quote_details", "quote_details": {"quote": "qt_1"}}, id="quote"),
            pytest.param(
                {"type": "subscription_details", "subscription_details": {"subscription": None}},
                id="null-subscription",
            ),
        ],
    )
    def test_invoice_outside_a_subscription_has_no_subscription_id(
        self, parent: dict[str, Any] | None
    ) -> None:
        payload = new_invoice()
        payload["parent"] = parent
        assert Invoice.model_validate(payload).subscription_id is None

    def test_unpaid_invoice_has_no_paid_at(self) -> None:
        payload = new_invoice()
        payload["status"] = "open"
        payload["status_transitions"]["paid_at"] = None
        invoice = Invoice.model_validate(payload)
        assert invoice.paid_at is None
        assert invoice.status == "open"

    def test_unknown_status_is_kept(self) -> None:
        payload = new_invoice()
        payload["status"] = "in_dispute"
        assert Invoice.model_validate(payload).status == "in_dispute"


class TestCustomer:
    def test_full_customer(self) -> None:
        customer = Customer.model_validate(
            {
                "id": "cus_1",
                "object": "customer",
                "address": {"country": "FR", "postal_code": "75001", "line1": None},
                "created": CREATED,
                "email": "ada@example.com",
                "invoice_settings": {
                    "custom_fields": None,
                    "default_payment_method": {"id": "pm_1", "object": "payment_method"},
                    "footer": None,
                },
                "livemode": True,
                "metadata": {"app_user_id": "user_42"},
                "name": "Ada",
                "preferred_locales": ["fr", "en"],
                "tax_exempt": "none",
            }
        )
        assert customer.deleted is False
        assert customer.default_payment_method == "pm_1"
        assert customer.preferred_locales == ["fr", "en"]
        assert customer.metadata["app_user_id"] == "user_42"
        assert customer.address == {"country": "FR", "postal_code": "75001", "line1": None}
        assert customer.livemode is True

    def test_deleted_customer(self) -> None:
        customer = Customer.model_validate({"id": "cus_1", "object": "customer", "deleted": True})
        assert customer.deleted is True
        assert customer.email is None
        assert customer.default_payment_method is None
        assert customer.metadata == {}
        assert customer.preferred_locales == []


class TestSmallerObjects:
    def test_payment_method_detached_has_no_customer(self) -> None:
        pm = PaymentMethod.model_validate(
            {
                "id": "pm_1",
                "object": "payment_method",
                "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034},
                "created": CREATED,
                "customer": None,
                "type": "card",
            }
        )
        assert pm.customer is None
        assert pm.card is not None
        assert (pm.card.brand, pm.card.last4, pm.card.exp_month) == ("visa", "4242", 12)

    def test_non_card_payment_method(self) -> None:
        pm = PaymentMethod.model_validate(
            {
                "id": "pm_2",
                "type": "sepa_debit",
                "customer": "cus_1",
                "sepa_debit": {"last4": "3000"},
            }
        )
        assert (pm.type, pm.card, pm.customer) == ("sepa_debit", None, "cus_1")

    def test_tax_id(self) -> None:
        tax_id = TaxId.model_validate(
            {
                "id": "txi_1",
                "object": "tax_id",
                "country": "FR",
                "customer": "cus_1",
                "type": "eu_vat",
                "value": "FR12345678901",
                "verification": {"status": "pending", "verified_name": None},
            }
        )
        assert tax_id.verification_status == "pending"
        assert (
            TaxId.model_validate({"id": "txi_2", "verification": None}).verification_status is None
        )

    def test_portal_configuration(self) -> None:
        config = PortalConfiguration.model_validate(
            {
                "id": "bpc_1",
                "object": "billing_portal.configuration",
                "active": False,
                "business_profile": {"headline": "Acme", "privacy_policy_url": None},
                "default_return_url": None,
                "features": {"invoice_history": {"enabled": True}},
                "is_default": True,
                "login_page": {"enabled": False, "url": None},
                "metadata": None,
                "name": None,
                "updated": CREATED,
            }
        )
        assert (config.active, config.is_default) == (False, True)
        assert config.features["invoice_history"] == {"enabled": True}
        assert config.metadata == {}

    def test_portal_session_never_holds_the_url(self) -> None:
        session = PortalSession.model_validate(portal_session())
        assert session.flow_type == "subscription_cancel"
        assert (session.customer, session.configuration, session.locale) == ("cus_1", "bpc_1", "fr")
        assert "url" not in PortalSession.model_fields
        assert "test_secret_token" not in json.dumps(session.model_dump(mode="json"))

    def test_portal_session_without_flow(self) -> None:
        payload = portal_session() | {"flow": None}
        assert PortalSession.model_validate(payload).flow_type is None

    def test_active_entitlement_summary(self) -> None:
        summary = ActiveEntitlementSummary.model_validate(
            {
                "object": "entitlements.active_entitlement_summary",
                "customer": "cus_1",
                "livemode": False,
                "entitlements": {
                    "object": "list",
                    "data": [
                        {
                            "id": "ent_1",
                            "object": "entitlements.active_entitlement",
                            "feature": "feat_1",
                            "livemode": False,
                            "lookup_key": "api-access",
                        },
                        {
                            "id": "ent_2",
                            "object": "entitlements.active_entitlement",
                            "feature": {"id": "feat_2", "object": "entitlements.feature"},
                            "livemode": False,
                            "lookup_key": "sso",
                        },
                    ],
                    "has_more": False,
                },
            }
        )
        assert [(e.feature, e.lookup_key) for e in summary.entitlements.data] == [
            ("feat_1", "api-access"),
            ("feat_2", "sso"),
        ]


class TestEvent:
    def test_reads_envelope(self) -> None:
        evt = Event.model_validate(event(new_subscription(), "customer.subscription.updated"))
        assert evt.type == "customer.subscription.updated"
        assert evt.created == utc(CREATED + 5)
        assert evt.account == ""
        assert evt.api_version == "2026-10-28.endive"
        assert evt.request is not None
        assert evt.request.idempotency_key == "k:abc"
        assert Subscription.model_validate(evt.data.object).period_end == utc(PERIOD_END)

    def test_connect_event_carries_its_account(self) -> None:
        evt = Event.model_validate(event(old_invoice(), "invoice.paid", account="acct_9"))
        assert evt.account == "acct_9"

    def test_previous_attributes(self) -> None:
        payload = event(new_subscription(), "customer.subscription.updated")
        payload["data"]["previous_attributes"] = {
            "cancel_at_period_end": False,
            "canceled_at": None,
        }
        evt = Event.model_validate(payload)
        assert evt.data.previous_attributes == {"cancel_at_period_end": False, "canceled_at": None}

    def test_legacy_string_request(self) -> None:
        evt = Event.model_validate(event(old_invoice(), "invoice.paid", request="req_old"))
        assert evt.request is not None
        assert evt.request.id == "req_old"

    def test_unknown_type_parses(self) -> None:
        evt = Event.model_validate(event({"id": "x_1"}, "quantum.flux.updated", shiny=True))
        assert evt.type == "quantum.flux.updated"

    @pytest.mark.parametrize("missing", ["id", "type", "created", "data"])
    def test_not_an_event_without_its_envelope(self, missing: str) -> None:
        payload = event(new_subscription(), "customer.subscription.updated")
        del payload[missing]
        with pytest.raises(ValidationError, match=missing):
            Event.model_validate(payload)


class TestRedactSessionUrls:
    def test_removes_url_from_a_session_event_without_touching_the_input(self) -> None:
        payload = event(portal_session(), "billing_portal.session.created")
        payload["data"]["previous_attributes"] = {"url": "https://billing.stripe.com/p/old"}
        original = copy.deepcopy(payload)
        redacted = redact_session_urls(payload)
        assert "url" not in redacted["data"]["object"]
        assert "url" not in redacted["data"]["previous_attributes"]
        assert "billing.stripe.com/p/" not in json.dumps(redacted)
        assert payload == original
        assert redacted["data"]["object"]["return_url"] == "https://app.example.com/account"
        expected = copy.deepcopy(original)
        del expected["data"]["object"]["url"]
        del expected["data"]["previous_attributes"]["url"]
        assert redacted == expected

    def test_removes_url_from_an_event_that_omits_its_object_keys(self) -> None:
        # Intake accepts an event body without `object`; the session in it may lack one too.
        session = portal_session()
        del session["object"]
        payload = event(session, "billing_portal.session.created")
        del payload["object"]
        redacted = redact_session_urls(payload)
        assert "url" not in redacted["data"]["object"]
        assert "billing.stripe.com/p/" not in json.dumps(redacted)

    def test_removes_url_from_nested_sessions(self) -> None:
        payload = {
            "object": "list",
            "data": [{"wrapper": {"session": portal_session()}}, portal_session()],
            "url": "/v1/billing_portal/sessions",
        }
        redacted = redact_session_urls(payload)
        assert "url" not in redacted["data"][0]["wrapper"]["session"]
        assert "url" not in redacted["data"][1]
        # The list's own `url` is an API path, not a credential.
        assert redacted["url"] == "/v1/billing_portal/sessions"

    @pytest.mark.parametrize(
        "obj",
        [
            pytest.param(old_invoice(), id="invoice-keeps-hosted-url"),
            pytest.param(
                {
                    "id": "bpc_1",
                    "object": "billing_portal.configuration",
                    "login_page": {"enabled": True, "url": "https://billing.stripe.com/p/login/x"},
                },
                id="configuration-login-page",
            ),
        ],
    )
    def test_leaves_other_objects_alone(self, obj: dict[str, Any]) -> None:
        payload = event(obj, "invoice.paid")
        redacted = redact_session_urls(payload)
        assert redacted == payload
        assert redacted is not payload
        assert redacted["data"] is not payload["data"]


class TestToJsonable:
    def test_decimals_from_stripe_to_dict(self) -> None:
        price = stripe.Price.construct_from(
            price_payload(
                unit_amount_decimal="1500.25",
                tiers=[{"up_to": 5, "flat_amount_decimal": "0.5", "unit_amount_decimal": "1E+3"}],
            ),
            "sk_test_x",
        )
        raw = price.to_dict()
        assert isinstance(raw["unit_amount_decimal"], decimal.Decimal)
        converted = to_jsonable(raw)
        assert converted["unit_amount_decimal"] == "1500.25"
        assert converted["tiers"][0] == {
            "up_to": 5,
            "flat_amount_decimal": "0.5",
            "unit_amount_decimal": "1000",
        }
        assert json.loads(json.dumps(converted)) == converted

    def test_stripe_object_itself(self) -> None:
        price = stripe.Price.construct_from(price_payload(unit_amount_decimal="7.5"), "sk_test_x")
        assert to_jsonable(price)["unit_amount_decimal"] == "7.5"

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            (True, True),
            (3, 3),
            (1.5, 1.5),
            ("x", "x"),
            (utc(CREATED), "2024-10-27T03:33:20+00:00"),
            (dt.date(2024, 10, 27), "2024-10-27"),
            ((1, decimal.Decimal("2.50")), [1, "2.50"]),
            ({1: {"a": [decimal.Decimal("0.1")]}}, {"1": {"a": ["0.1"]}}),
        ],
        ids=repr,
    )
    def test_values(self, value: Any, expected: Any) -> None:
        assert to_jsonable(value) == expected

    def test_pydantic_model(self) -> None:
        class Row(BaseModel):
            at: dt.datetime

        assert to_jsonable(Row(at=utc(CREATED))) == {"at": "2024-10-27T03:33:20Z"}

    @pytest.mark.parametrize(
        "value",
        [float("nan"), float("inf"), decimal.Decimal("NaN"), object(), b"bytes"],
        ids=repr,
    )
    def test_refuses_what_json_cannot_hold(self, value: Any) -> None:
        with pytest.raises((TypeError, ValueError)):
            to_jsonable(value)
