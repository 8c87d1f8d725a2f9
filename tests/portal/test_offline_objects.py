"""What the offline portal offers for a subscription: the same limitations GET
/me/subscriptions reports in `portal`, plus what the configuration enables."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from portal_service.gateway import offline_objects as sim
from portal_service.gateway import offline_subscriptions as subs
from portal_service.portal.offline_rules import PORTAL_RULES

NOW = 1_800_000_000


def _price(price_id: str, product: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": price_id,
        "object": "price",
        "product": product,
        "currency": "eur",
        "unit_amount": 900,
        "recurring": {"interval": "month", "usage_type": extra.pop("usage_type", "licensed")},
        "tax_behavior": extra.pop("tax_behavior", "exclusive"),
        **extra,
    }


MONTHLY = _price("price_m", "prod_a")
YEARLY = _price("price_y", "prod_a")
INCLUSIVE = _price("price_i", "prod_a", tax_behavior="inclusive")
CONFIGURATION = sim.configuration_object(
    "bpc_1",
    created=NOW,
    is_default=True,
    cancel_mode="at_period_end",
    products=[{"product": "prod_a", "prices": ["price_m", "price_y", "price_i"]}],
)
PRICES = {p["id"]: p for p in (MONTHLY, YEARLY, INCLUSIVE)}


def _subscription(**changes: Any) -> dict[str, Any]:
    sub = sim.subscription_object(
        customer_id="cus_1",
        price=MONTHLY,
        quantity=1,
        created=NOW,
        period_start=NOW,
        period_end=NOW + 30 * 86_400,
        latest_invoice=None,
    )
    sub.update(changes)
    return sub


def _with_second_item(sub: dict[str, Any], price: dict[str, Any]) -> dict[str, Any]:
    item = copy.deepcopy(sub["items"]["data"][0])
    item.update(id="si_second", price=price)
    sub["items"]["data"].append(item)
    return sub


class TestOffer:
    def test_a_plain_subscription_can_do_everything_the_configuration_enables(self) -> None:
        terms = subs.offer(_subscription(), CONFIGURATION, rules=PORTAL_RULES)
        assert (terms.can_cancel, terms.can_update, terms.quantity, terms.can_pause) == (
            True,
            True,
            True,
            True,
        )
        assert terms.prices == ("price_y", "price_i")
        assert terms.reasons == ()

    @pytest.mark.parametrize(
        ("sub", "reason", "can_cancel"),
        [
            (
                _with_second_item(_subscription(), _price("price_b", "prod_b")),
                "multiple_products",
                True,
            ),
            (_subscription(collection_method="send_invoice"), "send_invoice", True),
            (_subscription(schedule="sub_sched_1"), "has_schedule", False),
            (_subscription(status="canceled"), "not_active", False),
        ],
        ids=["multiple-products", "send-invoice", "schedule", "canceled"],
    )
    def test_the_portals_limitations_hold(
        self, sub: dict[str, Any], reason: str, can_cancel: bool
    ) -> None:
        terms = subs.offer(sub, CONFIGURATION, rules=PORTAL_RULES)
        assert reason in terms.reasons
        assert terms.can_update is False
        assert terms.can_cancel is can_cancel
        with pytest.raises(sim.ActionRefused):
            subs.update_subscription(
                sub, CONFIGURATION, PRICES, rules=PORTAL_RULES, quantity=2, price_id=None
            )

    def test_a_disabled_feature_is_not_offered(self) -> None:
        configuration = copy.deepcopy(CONFIGURATION)
        configuration["features"]["subscription_cancel"]["enabled"] = False
        configuration["features"]["subscription_pause"]["enabled"] = False
        terms = subs.offer(_subscription(), configuration, rules=PORTAL_RULES)
        assert (terms.can_cancel, terms.can_pause) == (False, False)
        with pytest.raises(sim.ActionRefused) as refused:
            subs.cancel_subscription(
                _subscription(),
                configuration,
                rules=PORTAL_RULES,
                now=NOW,
                reason=None,
                mode="at_period_end",
            )
        assert refused.value.reason == "cannot_cancel"

    def test_a_price_of_another_tax_behavior_is_refused(self) -> None:
        with pytest.raises(sim.ActionRefused) as refused:
            subs.update_subscription(
                _subscription(),
                CONFIGURATION,
                PRICES,
                rules=PORTAL_RULES,
                quantity=None,
                price_id="price_i",
            )
        assert refused.value.reason == "tax_behavior_mismatch"

    def test_cancel_at_period_end_sets_what_stripe_sets(self) -> None:
        sub = _subscription()
        out = subs.cancel_subscription(
            sub,
            CONFIGURATION,
            rules=PORTAL_RULES,
            now=NOW + 5,
            reason="unused",
            mode="at_period_end",
        )
        ((event_type, obj, previous),) = out.events
        assert event_type == "customer.subscription.updated"
        assert obj["cancel_at_period_end"] is True
        assert obj["cancel_at"] == NOW + 30 * 86_400
        assert previous is not None
        assert previous["cancel_at_period_end"] is False
        assert sub["cancel_at_period_end"] is False  # the input is never changed in place
        with pytest.raises(sim.ActionRefused):
            subs.cancel_subscription(
                sub, CONFIGURATION, rules=PORTAL_RULES, now=NOW, reason=None, mode="immediately"
            )
