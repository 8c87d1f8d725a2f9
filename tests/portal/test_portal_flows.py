"""Portal flows through POST /portal-sessions: the exact `flow_data` Stripe receives for
each flow type, and the checks against the mirror that refuse a flow before Stripe is called."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from portal.fakes import Mirror, StripeFake
from portal_service.mirror.tables import PortalSession, Subscription, SubscriptionItem
from portal_service.portal.flows import TaxBehaviorCache
from support import user_headers

USER = "user_1"
CUSTOMER = "cus_1"
SUB = "sub_1"
ITEM = "si_1"


@pytest.fixture
async def linked(mirror: Mirror) -> None:
    await mirror.customer(CUSTOMER, app_user_id=USER)
    await mirror.subscription(
        SUB,
        customer_id=CUSTOMER,
        items=[{"id": ITEM, "price_id": "price_a", "product_id": "prod_a"}],
    )
    await mirror.subscription("sub_other", customer_id="cus_other")


async def _post(client: httpx.AsyncClient, flow: dict[str, Any]) -> httpx.Response:
    return await client.post("/portal-sessions", headers=user_headers(USER), json={"flow": flow})


def _flow_fields(form: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in form.items() if key.startswith("flow_data")}


@pytest.mark.usefixtures("linked")
class TestFlowEncoding:
    @pytest.mark.parametrize(
        ("flow", "expected"),
        [
            pytest.param(
                {"type": "payment_method_update"},
                {"flow_data[type]": "payment_method_update"},
                id="payment_method_update",
            ),
            pytest.param(
                {
                    "type": "payment_method_update",
                    "after_completion": {
                        "type": "redirect",
                        "return_url": "https://app.example.com/thanks",
                    },
                },
                {
                    "flow_data[type]": "payment_method_update",
                    "flow_data[after_completion][type]": "redirect",
                    "flow_data[after_completion][redirect][return_url]": "https://app.example.com/thanks",
                },
                id="payment_method_update-redirect",
            ),
            pytest.param(
                {
                    "type": "customer_update",
                    "after_completion": {
                        "type": "hosted_confirmation",
                        "custom_message": "All set.",
                    },
                },
                {
                    "flow_data[type]": "customer_update",
                    "flow_data[after_completion][type]": "hosted_confirmation",
                    "flow_data[after_completion][hosted_confirmation][custom_message]": "All set.",
                },
                id="customer_update-hosted_confirmation",
            ),
            pytest.param(
                {"type": "subscription_cancel", "subscription_id": SUB},
                {
                    "flow_data[type]": "subscription_cancel",
                    "flow_data[subscription_cancel][subscription]": SUB,
                },
                id="subscription_cancel",
            ),
            pytest.param(
                {
                    "type": "subscription_cancel",
                    "subscription_id": SUB,
                    "retention_coupon": "coupon_abc",
                    "after_completion": {"type": "portal_homepage"},
                },
                {
                    "flow_data[type]": "subscription_cancel",
                    "flow_data[subscription_cancel][subscription]": SUB,
                    "flow_data[subscription_cancel][retention][type]": "coupon_offer",
                    "flow_data[subscription_cancel][retention][coupon_offer][coupon]": "coupon_abc",
                    "flow_data[after_completion][type]": "portal_homepage",
                },
                id="subscription_cancel-retention-homepage",
            ),
            pytest.param(
                {"type": "subscription_update", "subscription_id": SUB},
                {
                    "flow_data[type]": "subscription_update",
                    "flow_data[subscription_update][subscription]": SUB,
                },
                id="subscription_update",
            ),
            pytest.param(
                {
                    "type": "subscription_update_confirm",
                    "subscription_id": SUB,
                    "items": [{"id": ITEM, "quantity": 3}],
                },
                {
                    "flow_data[type]": "subscription_update_confirm",
                    "flow_data[subscription_update_confirm][subscription]": SUB,
                    "flow_data[subscription_update_confirm][items][0][id]": ITEM,
                    "flow_data[subscription_update_confirm][items][0][quantity]": "3",
                },
                id="subscription_update_confirm-quantity",
            ),
            pytest.param(
                {
                    "type": "subscription_update_confirm",
                    "subscription_id": SUB,
                    "items": [{"id": ITEM, "price": "price_a2", "quantity": 2}],
                    "discounts": [{"coupon": "c10"}, {"promotion_code": "promo_1"}],
                },
                {
                    "flow_data[type]": "subscription_update_confirm",
                    "flow_data[subscription_update_confirm][subscription]": SUB,
                    "flow_data[subscription_update_confirm][items][0][id]": ITEM,
                    "flow_data[subscription_update_confirm][items][0][price]": "price_a2",
                    "flow_data[subscription_update_confirm][items][0][quantity]": "2",
                    "flow_data[subscription_update_confirm][discounts][0][coupon]": "c10",
                    "flow_data[subscription_update_confirm][discounts][1][promotion_code]": "promo_1",
                },
                id="subscription_update_confirm-price-discounts",
            ),
            pytest.param(
                {"type": "subscription_pause", "subscription_id": SUB},
                {
                    "flow_data[type]": "subscription_pause",
                    "flow_data[subscription_pause][subscription]": SUB,
                },
                id="subscription_pause",
            ),
        ],
    )
    async def test_stripe_receives_exactly_the_flow_data(
        self,
        stripe_app: httpx.AsyncClient,
        stripe_fake: StripeFake,
        mirror: Mirror,
        flow: dict[str, Any],
        expected: dict[str, str],
    ) -> None:
        # price_a2 is a settled inclusive price, like the current one.
        await mirror.add(
            SubscriptionItem(
                id="si_elsewhere",
                subscription_id="sub_x",
                price_id="price_a2",
                tax_behavior="inclusive",
            )
        )
        response = await _post(stripe_app, flow)
        assert response.status_code == 201, response.json()
        assert response.json()["flow_type"] == flow["type"]
        (sent,) = stripe_fake.sessions_sent
        assert _flow_fields(sent.form) == expected
        assert sent.form["customer"] == CUSTOMER

    async def test_the_row_records_the_flow_type(
        self, stripe_app: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        response = await _post(stripe_app, {"type": "subscription_cancel", "subscription_id": SUB})
        row = await mirror.get(PortalSession, response.json()["id"])
        assert row.flow_type == "subscription_cancel"


@pytest.mark.usefixtures("linked")
class TestFlowRequestValidation:
    @pytest.mark.parametrize(
        "flow",
        [
            pytest.param({"type": "subscription_cancel"}, id="missing-subscription"),
            pytest.param({"type": "refund_everything"}, id="unknown-type"),
            pytest.param(
                {"type": "payment_method_update", "subscription_id": SUB},
                id="field-of-another-flow",
            ),
            pytest.param(
                {"type": "subscription_update_confirm", "subscription_id": SUB, "items": []},
                id="no-items",
            ),
            pytest.param(
                {
                    "type": "subscription_update_confirm",
                    "subscription_id": SUB,
                    "items": [{"id": ITEM, "quantity": 1}, {"id": "si_2", "quantity": 1}],
                },
                id="two-items",
            ),
            pytest.param(
                {
                    "type": "subscription_update_confirm",
                    "subscription_id": SUB,
                    "items": [{"id": ITEM}],
                },
                id="item-changes-nothing",
            ),
            pytest.param(
                {
                    "type": "subscription_update_confirm",
                    "subscription_id": SUB,
                    "items": [{"id": ITEM, "quantity": 1}],
                    "discounts": [{"coupon": "a", "promotion_code": "b"}],
                },
                id="discount-with-both",
            ),
            pytest.param(
                {"type": "payment_method_update", "after_completion": {"type": "redirect"}},
                id="redirect-without-url",
            ),
            pytest.param(
                {
                    "type": "customer_update",
                    "after_completion": {
                        "type": "hosted_confirmation",
                        "custom_message": "x" * 501,
                    },
                },
                id="custom-message-too-long",
            ),
            pytest.param(
                {"type": "subscription_cancel", "subscription_id": "sub_1; DROP TABLE"},
                id="malformed-subscription-id",
            ),
        ],
    )
    async def test_malformed_flow_is_invalid_request_and_stripe_is_not_called(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, flow: dict[str, Any]
    ) -> None:
        response = await _post(stripe_app, flow)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"
        assert stripe_fake.requests == []

    async def test_item_of_another_subscription_is_invalid_request(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        flow = {
            "type": "subscription_update_confirm",
            "subscription_id": SUB,
            "items": [{"id": "si_other", "quantity": 2}],
        }
        response = await _post(stripe_app, flow)
        assert response.status_code == 422
        assert "si_other" in response.json()["detail"]
        assert stripe_fake.sessions_sent == []


@pytest.mark.usefixtures("linked")
class TestFlowSubscriptionOwnership:
    async def test_another_customers_subscription_is_not_found(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        response = await _post(
            stripe_app, {"type": "subscription_cancel", "subscription_id": "sub_other"}
        )
        assert response.status_code == 404
        assert response.json()["code"] == "subscription_not_found"
        assert stripe_fake.requests == []

    async def test_subscription_of_the_other_mode_is_not_found(
        self, stripe_app: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        await mirror.subscription("sub_live", customer_id=CUSTOMER, livemode=True)
        response = await _post(
            stripe_app, {"type": "subscription_cancel", "subscription_id": "sub_live"}
        )
        assert response.status_code == 404
        assert response.json()["code"] == "subscription_not_found"

    async def test_unmirrored_subscription_is_fetched_once_and_applied(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        stripe_fake.subscriptions["sub_new"] = _stripe_subscription("sub_new", customer=CUSTOMER)
        response = await _post(
            stripe_app, {"type": "subscription_update", "subscription_id": "sub_new"}
        )
        assert response.status_code == 201, response.json()
        assert len(stripe_fake.sent("/v1/subscriptions/sub_new")) == 1
        applied = await mirror.get(Subscription, "sub_new")
        assert applied is not None
        assert applied.customer_id == CUSTOMER
        assert applied.status == "active"

    async def test_unmirrored_subscription_of_another_customer_is_not_found(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        stripe_fake.subscriptions["sub_new"] = _stripe_subscription("sub_new", customer="cus_other")
        response = await _post(
            stripe_app, {"type": "subscription_update", "subscription_id": "sub_new"}
        )
        assert response.status_code == 404
        assert response.json()["code"] == "subscription_not_found"
        assert stripe_fake.sessions_sent == []
        assert await mirror.get(Subscription, "sub_new") is None

    async def test_subscription_unknown_to_stripe_is_not_found(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        response = await _post(
            stripe_app, {"type": "subscription_pause", "subscription_id": "sub_nope"}
        )
        assert response.status_code == 404
        assert response.json()["code"] == "subscription_not_found"
        assert stripe_fake.sessions_sent == []

    @pytest.mark.sqlite
    async def test_offline_mode_cannot_fetch_and_answers_not_found(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await _post(
            client, {"type": "subscription_cancel", "subscription_id": "sub_nope"}
        )
        assert response.status_code == 404
        assert response.json()["code"] == "subscription_not_found"


class TestFlowRefusals:
    @pytest.mark.parametrize(
        ("flow_type", "subscription", "reason"),
        [
            pytest.param(
                "subscription_update",
                {"schedule_id": "sub_sched_1"},
                "has_schedule",
                id="update-schedule",
            ),
            pytest.param(
                "subscription_cancel",
                {"schedule_id": "sub_sched_1"},
                "has_schedule",
                id="cancel-schedule",
            ),
            pytest.param(
                "subscription_update",
                {
                    "items": [
                        {"id": "si_a", "product_id": "prod_a"},
                        {"id": "si_b", "product_id": "prod_b"},
                    ]
                },
                "multiple_products",
                id="update-two-products",
            ),
            pytest.param(
                "subscription_update",
                {"items": [{"id": "si_m", "usage_type": "metered", "quantity": None}]},
                "usage_based",
                id="update-metered",
            ),
            pytest.param(
                "subscription_update",
                {"collection_method": "send_invoice"},
                "send_invoice",
                id="update-send-invoice",
            ),
            pytest.param(
                "subscription_cancel", {"status": "canceled"}, "not_active", id="cancel-canceled"
            ),
            pytest.param(
                "subscription_pause", {"status": "past_due"}, "not_active", id="pause-past-due"
            ),
        ],
    )
    async def test_portal_limitation_is_refused_with_reason(
        self,
        stripe_app: httpx.AsyncClient,
        stripe_fake: StripeFake,
        mirror: Mirror,
        flow_type: str,
        subscription: dict[str, Any],
        reason: str,
    ) -> None:
        await mirror.customer(CUSTOMER, app_user_id=USER)
        await mirror.subscription("sub_x", customer_id=CUSTOMER, **subscription)
        response = await _post(stripe_app, {"type": flow_type, "subscription_id": "sub_x"})
        assert response.status_code == 409
        body = response.json()
        assert body["code"] == "portal_action_unavailable"
        assert body["reason"] == reason
        assert "portal" in body["detail"]
        assert stripe_fake.sessions_sent == []

    @pytest.mark.sqlite
    async def test_cancel_is_allowed_where_only_updates_are_refused(
        self, client: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        await mirror.customer(CUSTOMER, app_user_id=USER)
        await mirror.subscription(
            "sub_x",
            customer_id=CUSTOMER,
            items=[{"id": "si_a", "product_id": "prod_a"}, {"id": "si_b", "product_id": "prod_b"}],
        )
        cancel = await _post(client, {"type": "subscription_cancel", "subscription_id": "sub_x"})
        update = await _post(client, {"type": "subscription_update", "subscription_id": "sub_x"})
        assert cancel.status_code == 201
        assert update.status_code == 409

    async def test_price_with_other_tax_behavior_is_refused_after_one_price_read(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer(CUSTOMER, app_user_id=USER)
        await mirror.subscription(
            SUB, customer_id=CUSTOMER, items=[{"id": ITEM, "tax_behavior": "inclusive"}]
        )
        stripe_fake.prices["price_excl"] = {
            "id": "price_excl",
            "object": "price",
            "tax_behavior": "exclusive",
        }
        flow = {
            "type": "subscription_update_confirm",
            "subscription_id": SUB,
            "items": [{"id": ITEM, "price": "price_excl"}],
        }
        first = await _post(stripe_app, flow)
        second = await _post(stripe_app, flow)
        assert first.status_code == second.status_code == 409
        assert first.json()["reason"] == "tax_behavior_mismatch"
        assert len(stripe_fake.sent("/v1/prices/price_excl")) == 1  # cached in-process
        assert stripe_fake.sessions_sent == []

    async def test_price_with_the_same_tax_behavior_is_accepted(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer(CUSTOMER, app_user_id=USER)
        await mirror.subscription(
            SUB, customer_id=CUSTOMER, items=[{"id": ITEM, "tax_behavior": "exclusive"}]
        )
        stripe_fake.prices["price_excl"] = {
            "id": "price_excl",
            "object": "price",
            "tax_behavior": "exclusive",
        }
        flow = {
            "type": "subscription_update_confirm",
            "subscription_id": SUB,
            "items": [{"id": ITEM, "price": "price_excl"}],
        }
        response = await _post(stripe_app, flow)
        assert response.status_code == 201, response.json()

    async def test_quantity_change_is_judged_without_tax_behavior(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        # Stripe's tax-behavior rule is about switching prices: a quantity-only update
        # keeps the price, so an unspecified tax behavior does not block it.
        await mirror.customer(CUSTOMER, app_user_id=USER)
        await mirror.subscription(
            SUB, customer_id=CUSTOMER, items=[{"id": ITEM, "tax_behavior": "unspecified"}]
        )
        quantity = {
            "type": "subscription_update_confirm",
            "subscription_id": SUB,
            "items": [{"id": ITEM, "quantity": 3}],
        }
        stripe_fake.prices["price_new"] = {
            "id": "price_new",
            "object": "price",
            "tax_behavior": "unspecified",
        }
        price = {**quantity, "items": [{"id": ITEM, "price": "price_new"}]}
        allowed = await _post(stripe_app, quantity)
        refused = await _post(stripe_app, price)
        assert allowed.status_code == 201, allowed.json()
        assert refused.status_code == 409
        assert refused.json()["reason"] == "tax_behavior_mismatch"

    async def test_unknown_target_price_is_invalid_request(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer(CUSTOMER, app_user_id=USER)
        await mirror.subscription(SUB, customer_id=CUSTOMER, items=[{"id": ITEM}])
        flow = {
            "type": "subscription_update_confirm",
            "subscription_id": SUB,
            "items": [{"id": ITEM, "price": "price_gone"}],
        }
        response = await _post(stripe_app, flow)
        assert response.status_code == 422
        assert "price_gone" in response.json()["detail"]

    async def test_feature_disabled_in_the_mirrored_default_configuration_is_refused(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer(CUSTOMER, app_user_id=USER)
        await mirror.subscription(SUB, customer_id=CUSTOMER)
        await mirror.configuration(
            "bpc_default", is_default=True, features={"subscription_cancel": {"enabled": False}}
        )
        response = await _post(stripe_app, {"type": "subscription_cancel", "subscription_id": SUB})
        assert response.status_code == 409
        assert response.json()["reason"] == "feature_disabled"
        assert stripe_fake.sessions_sent == []

    async def test_price_the_configuration_does_not_offer_is_refused(
        self, stripe_app: httpx.AsyncClient, mirror: Mirror
    ) -> None:
        await mirror.customer(CUSTOMER, app_user_id=USER)
        await mirror.subscription(
            SUB, customer_id=CUSTOMER, items=[{"id": ITEM, "price_id": "price_a"}]
        )
        await mirror.add(
            SubscriptionItem(
                id="si_b", subscription_id="sub_b", price_id="price_b", tax_behavior="inclusive"
            )
        )
        await mirror.configuration(
            "bpc_default",
            is_default=True,
            features={
                "subscription_update": {
                    "enabled": True,
                    "products": [{"product": "prod_a", "prices": ["price_a", "price_a2"]}],
                }
            },
        )
        flow = {
            "type": "subscription_update_confirm",
            "subscription_id": SUB,
            "items": [{"id": ITEM, "price": "price_b"}],
        }
        response = await _post(stripe_app, flow)
        assert response.status_code == 409
        assert response.json()["reason"] == "price_not_offered"


@pytest.mark.sqlite
class TestTaxBehaviorCache:
    def test_keeps_values_per_mode(self) -> None:
        cache = TaxBehaviorCache()
        cache.put("price_1", "inclusive", livemode=False)
        assert cache.get("price_1", livemode=False) == "inclusive"
        assert cache.get("price_1", livemode=True) is None

    def test_forgets_values_older_than_the_ttl(self) -> None:
        cache = TaxBehaviorCache(ttl_seconds=-1)
        cache.put("price_1", "inclusive", livemode=False)
        assert cache.get("price_1", livemode=False) is None

    def test_is_bounded_and_evicts_the_least_recently_used(self) -> None:
        cache = TaxBehaviorCache(max_entries=2)
        cache.put("price_1", "inclusive", livemode=False)
        cache.put("price_2", "exclusive", livemode=False)
        assert cache.get("price_1", livemode=False) == "inclusive"  # now the most recent
        cache.put("price_3", "unspecified", livemode=False)
        assert cache.get("price_2", livemode=False) is None
        assert cache.get("price_1", livemode=False) == "inclusive"
        assert cache.get("price_3", livemode=False) == "unspecified"


def _stripe_subscription(subscription_id: str, *, customer: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer,
        "status": "active",
        "livemode": False,
        "created": now - 100,
        "cancel_at_period_end": False,
        "collection_method": "charge_automatically",
        "items": {
            "object": "list",
            "has_more": False,
            "data": [
                {
                    "id": "si_" + subscription_id,
                    "object": "subscription_item",
                    "quantity": 1,
                    "current_period_start": now - 100,
                    "current_period_end": now + 86400,
                    "price": {
                        "id": "price_a",
                        "object": "price",
                        "product": "prod_a",
                        "tax_behavior": "inclusive",
                        "recurring": {"interval": "month", "usage_type": "licensed"},
                    },
                }
            ],
        },
    }
