"""Access policy, portal capabilities and portal flow refusals, as decision tables."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from portal_service.access.policy import (
    AccessPolicy,
    Capabilities,
    ItemFacts,
    Refusal,
    SubscriptionFacts,
    access_until,
    flow_refusal,
    grants_access,
    portal_capabilities,
)

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
PERIOD_START = NOW - timedelta(days=10)
PERIOD_END = NOW + timedelta(days=20)

DEFAULT = AccessPolicy()
GENEROUS = AccessPolicy(past_due_grace_days=3, access_during_paused_collection=True)


def item(**changes: Any) -> ItemFacts:
    base = ItemFacts(
        price_id="price_basic",
        product_id="prod_basic",
        quantity=1,
        usage_type="licensed",
        tax_behavior="exclusive",
    )
    return dataclasses.replace(base, **changes)


def sub(**changes: Any) -> SubscriptionFacts:
    base = SubscriptionFacts(
        id="sub_1",
        status="active",
        cancel_at_period_end=False,
        cancel_at=None,
        current_period_start=PERIOD_START,
        current_period_end=PERIOD_END,
        pause_collection_behavior=None,
        collection_method="charge_automatically",
        schedule_id=None,
        items=(item(),),
    )
    return dataclasses.replace(base, **changes)


TWO_PRODUCTS = (item(), item(price_id="price_addon", product_id="prod_addon"))
METERED = (item(usage_type="metered", quantity=None),)


class TestAccessPolicy:
    def test_defaults_give_no_grace_and_no_access_while_collection_paused(self) -> None:
        assert AccessPolicy() == AccessPolicy(
            past_due_grace_days=0, access_during_paused_collection=False
        )

    def test_negative_grace_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="past_due_grace_days"):
            AccessPolicy(past_due_grace_days=-1)

    def test_is_immutable(self) -> None:
        policy = AccessPolicy()
        with pytest.raises(dataclasses.FrozenInstanceError):
            policy.past_due_grace_days = 5  # type: ignore[misc]  # asserting the runtime guard


class TestAccessUntil:
    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            pytest.param({}, None, id="ongoing"),
            pytest.param(
                {"cancel_at": NOW + timedelta(days=5)}, NOW + timedelta(days=5), id="cancel_at"
            ),
            pytest.param({"cancel_at_period_end": True}, PERIOD_END, id="cancel_at_period_end"),
            pytest.param(
                {"cancel_at_period_end": True, "cancel_at": NOW + timedelta(days=5)},
                NOW + timedelta(days=5),
                id="cancel_at_wins_over_period_end",
            ),
            pytest.param(
                {"cancel_at_period_end": True, "current_period_end": None},
                None,
                id="period_end_unknown",
            ),
            pytest.param(
                {"cancel_at": NOW - timedelta(days=1), "status": "canceled"},
                NOW - timedelta(days=1),
                id="past_cancel_at_still_reported",
            ),
        ],
    )
    def test_reports_the_scheduled_end(
        self, changes: dict[str, Any], expected: datetime | None
    ) -> None:
        assert access_until(sub(**changes)) == expected


class TestGrantsAccessByStatus:
    @pytest.mark.parametrize(
        ("status", "policy", "expected"),
        [
            pytest.param("active", DEFAULT, True, id="active"),
            pytest.param("trialing", DEFAULT, True, id="trialing"),
            pytest.param("past_due", DEFAULT, False, id="past_due-no_grace"),
            pytest.param("past_due", GENEROUS, True, id="past_due-in_grace"),
            *(
                pytest.param(status, policy, False, id=f"{status}-{name}")
                for status in ("paused", "unpaid", "incomplete", "incomplete_expired", "canceled")
                for name, policy in (("default", DEFAULT), ("generous", GENEROUS))
            ),
            *(
                pytest.param(status, GENEROUS, False, id=f"unknown-{status or 'empty'}")
                for status in ("frozen", "", "ACTIVE", "active ")
            ),
        ],
    )
    def test_status_decides_access(self, status: str, policy: AccessPolicy, expected: bool) -> None:
        facts = sub(status=status, oldest_unpaid_invoice_created=NOW - timedelta(days=1))
        assert grants_access(facts, policy=policy, now=NOW) is expected


class TestGrantsAccessPastDueGrace:
    @pytest.mark.parametrize(
        ("grace_days", "invoice_created", "period_start", "expected"),
        [
            pytest.param(0, NOW, PERIOD_START, False, id="grace_0-never-even_fresh_invoice"),
            pytest.param(3, NOW - timedelta(days=2), PERIOD_START, True, id="invoice_2d_of_3"),
            pytest.param(
                3,
                NOW - timedelta(days=3) + timedelta(seconds=1),
                PERIOD_START,
                True,
                id="invoice_just_under_3d",
            ),
            pytest.param(3, NOW - timedelta(days=3), PERIOD_START, False, id="invoice_exactly_3d"),
            pytest.param(3, NOW - timedelta(days=4), PERIOD_START, False, id="invoice_4d_of_3"),
            pytest.param(
                3,
                NOW - timedelta(days=4),
                NOW - timedelta(days=1),
                False,
                id="invoice_wins_over_recent_period_start",
            ),
            pytest.param(
                3,
                NOW - timedelta(days=1),
                NOW - timedelta(days=10),
                True,
                id="invoice_wins_over_old_period_start",
            ),
            pytest.param(
                3, None, NOW - timedelta(days=2), True, id="no_invoice-period_start_2d_of_3"
            ),
            pytest.param(
                3, None, NOW - timedelta(days=3), False, id="no_invoice-period_start_exactly_3d"
            ),
            pytest.param(0, None, NOW, False, id="no_invoice-grace_0"),
            pytest.param(3, None, None, False, id="no_anchor_at_all"),
        ],
    )
    def test_grace_runs_from_oldest_unpaid_invoice_else_period_start(
        self,
        grace_days: int,
        invoice_created: datetime | None,
        period_start: datetime | None,
        expected: bool,
    ) -> None:
        facts = sub(
            status="past_due",
            oldest_unpaid_invoice_created=invoice_created,
            current_period_start=period_start,
        )
        policy = AccessPolicy(past_due_grace_days=grace_days)
        assert grants_access(facts, policy=policy, now=NOW) is expected

    def test_grace_ignores_the_invoice_for_live_statuses(self) -> None:
        facts = sub(status="active", oldest_unpaid_invoice_created=NOW - timedelta(days=30))
        assert grants_access(facts, policy=DEFAULT, now=NOW) is True


class TestGrantsAccessPausedCollection:
    @pytest.mark.parametrize(
        ("status", "behavior", "allowed_while_paused", "expected"),
        [
            *(
                pytest.param(
                    status, behavior, allowed, allowed, id=f"{status}-{behavior}-{allowed}"
                )
                for status in ("active", "trialing")
                for behavior in ("void", "keep_as_draft", "mark_uncollectible")
                for allowed in (False, True)
            ),
            pytest.param("active", None, False, True, id="active-not_paused"),
            pytest.param("past_due", "void", False, False, id="past_due_in_grace-paused-denied"),
            pytest.param("past_due", "void", True, True, id="past_due_in_grace-paused-allowed"),
            pytest.param("canceled", "void", True, False, id="canceled-paused-allowed"),
            pytest.param("paused", None, True, False, id="status_paused-flag_not_applied"),
            pytest.param("paused", "void", True, False, id="status_paused-and_collection_paused"),
        ],
    )
    def test_paused_collection_keeps_access_only_when_allowed(
        self, status: str, behavior: str | None, allowed_while_paused: bool, expected: bool
    ) -> None:
        facts = sub(
            status=status,
            pause_collection_behavior=behavior,
            oldest_unpaid_invoice_created=NOW - timedelta(days=1),
        )
        policy = AccessPolicy(
            past_due_grace_days=3, access_during_paused_collection=allowed_while_paused
        )
        assert grants_access(facts, policy=policy, now=NOW) is expected


class TestGrantsAccessScheduledEnd:
    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            pytest.param({"cancel_at": NOW + timedelta(seconds=1)}, True, id="cancel_at_ahead"),
            pytest.param({"cancel_at": NOW}, False, id="cancel_at_now"),
            pytest.param(
                {"cancel_at": NOW - timedelta(hours=1)}, False, id="cancel_at_passed-event_late"
            ),
            pytest.param(
                {"cancel_at_period_end": True, "current_period_end": NOW + timedelta(days=1)},
                True,
                id="period_end_ahead",
            ),
            pytest.param(
                {"cancel_at_period_end": True, "current_period_end": NOW},
                False,
                id="period_end_now",
            ),
            pytest.param(
                {"cancel_at_period_end": True, "current_period_end": NOW - timedelta(minutes=5)},
                False,
                id="period_end_passed-event_late",
            ),
            pytest.param(
                {"cancel_at_period_end": False, "current_period_end": NOW - timedelta(days=1)},
                True,
                id="renewing-period_end_passed-renewal_not_mirrored_yet",
            ),
            pytest.param(
                {
                    "cancel_at_period_end": True,
                    "current_period_end": NOW - timedelta(days=1),
                    "cancel_at": NOW + timedelta(days=1),
                },
                True,
                id="cancel_at_ahead_wins_over_passed_period_end",
            ),
            pytest.param(
                {
                    "cancel_at_period_end": True,
                    "current_period_end": NOW + timedelta(days=1),
                    "cancel_at": NOW - timedelta(days=1),
                },
                False,
                id="cancel_at_passed_wins_over_period_end_ahead",
            ),
            pytest.param(
                {"cancel_at_period_end": True, "current_period_end": None},
                True,
                id="period_end_unknown-ongoing",
            ),
        ],
    )
    @pytest.mark.parametrize("status", ["active", "trialing"])
    def test_access_ends_at_access_until(
        self, status: str, changes: dict[str, Any], expected: bool
    ) -> None:
        facts = sub(status=status, **changes)
        assert grants_access(facts, policy=DEFAULT, now=NOW) is expected

    def test_late_cancellation_ends_past_due_grace_too(self) -> None:
        facts = sub(
            status="past_due",
            oldest_unpaid_invoice_created=NOW - timedelta(days=1),
            cancel_at=NOW - timedelta(hours=1),
        )
        policy = AccessPolicy(past_due_grace_days=3)
        assert grants_access(facts, policy=policy, now=NOW) is False


class TestPortalCapabilities:
    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            pytest.param({}, Capabilities(True, True, ()), id="plain"),
            *(
                pytest.param({"status": status}, Capabilities(True, True, ()), id=status)
                for status in ("trialing", "past_due", "unpaid", "incomplete", "paused", "frozen")
            ),
            pytest.param(
                {"status": "canceled"},
                Capabilities(False, False, ("not_active",)),
                id="canceled",
            ),
            pytest.param(
                {"status": "incomplete_expired"},
                Capabilities(False, False, ("not_active",)),
                id="incomplete_expired",
            ),
            pytest.param(
                {"schedule_id": "sub_sched_1"},
                Capabilities(False, False, ("has_schedule",)),
                id="schedule",
            ),
            pytest.param(
                {"items": TWO_PRODUCTS},
                Capabilities(False, True, ("multiple_products",)),
                id="two_products",
            ),
            pytest.param(
                {"items": (item(), item(price_id="price_yearly"))},
                Capabilities(True, True, ()),
                id="two_prices_one_product",
            ),
            pytest.param(
                {"items": (item(), item(product_id=None))},
                Capabilities(False, True, ("multiple_products",)),
                id="known_and_unknown_product",
            ),
            pytest.param(
                {"items": (item(product_id=None),)},
                Capabilities(True, True, ()),
                id="single_unknown_product",
            ),
            pytest.param({"items": ()}, Capabilities(True, True, ()), id="no_items"),
            pytest.param(
                {"items": METERED},
                Capabilities(False, True, ("usage_based",)),
                id="metered",
            ),
            pytest.param(
                {"items": (item(usage_type=None),)},
                Capabilities(True, True, ()),
                id="usage_type_unknown",
            ),
            pytest.param(
                {"items": (item(), item(usage_type="metered", quantity=None))},
                Capabilities(False, True, ("usage_based",)),
                id="licensed_plus_metered_same_product",
            ),
            pytest.param(
                {"collection_method": "send_invoice"},
                Capabilities(False, True, ("send_invoice",)),
                id="send_invoice",
            ),
            pytest.param(
                {"collection_method": None},
                Capabilities(True, True, ()),
                id="collection_method_unknown",
            ),
            pytest.param(
                {"pause_collection_behavior": "void"},
                Capabilities(True, True, ()),
                id="collection_paused",
            ),
            pytest.param(
                {"status": "canceled", "schedule_id": "sub_sched_1"},
                Capabilities(False, False, ("not_active", "has_schedule")),
                id="canceled+schedule",
            ),
            pytest.param(
                {"schedule_id": "sub_sched_1", "collection_method": "send_invoice"},
                Capabilities(False, False, ("has_schedule", "send_invoice")),
                id="schedule+send_invoice",
            ),
            pytest.param(
                {
                    "items": (*TWO_PRODUCTS, item(product_id="prod_api", usage_type="metered")),
                    "collection_method": "send_invoice",
                },
                Capabilities(False, True, ("multiple_products", "usage_based", "send_invoice")),
                id="all_cancel_only_reasons",
            ),
            pytest.param(
                {
                    "status": "incomplete_expired",
                    "schedule_id": "sub_sched_1",
                    "items": (*TWO_PRODUCTS, item(product_id="prod_api", usage_type="metered")),
                    "collection_method": "send_invoice",
                },
                Capabilities(
                    False,
                    False,
                    (
                        "not_active",
                        "has_schedule",
                        "multiple_products",
                        "usage_based",
                        "send_invoice",
                    ),
                ),
                id="every_reason-in_order",
            ),
        ],
    )
    def test_capabilities_follow_documented_portal_limitations(
        self, changes: dict[str, Any], expected: Capabilities
    ) -> None:
        assert portal_capabilities(sub(**changes)) == expected


SUBSCRIPTION_FLOWS = (
    "subscription_cancel",
    "subscription_update",
    "subscription_update_confirm",
    "subscription_pause",
)


def refusal_code(flow_type: str, facts: SubscriptionFacts | None, **kwargs: Any) -> str | None:
    refusal = flow_refusal(flow_type, facts, **kwargs)
    return None if refusal is None else refusal.code


class TestFlowRefusalCustomerFlows:
    @pytest.mark.parametrize("flow_type", ["payment_method_update", "customer_update"])
    @pytest.mark.parametrize(
        "facts",
        [
            pytest.param(None, id="no_subscription"),
            pytest.param(
                sub(status="canceled", schedule_id="sub_sched_1"), id="ended_scheduled_subscription"
            ),
        ],
    )
    def test_customer_flows_are_never_refused(
        self, flow_type: str, facts: SubscriptionFacts | None
    ) -> None:
        assert flow_refusal(flow_type, facts) is None


class TestFlowRefusalSubscriptionFlows:
    @pytest.mark.parametrize(
        ("changes", "cancel", "update", "pause"),
        [
            pytest.param({}, None, None, None, id="plain"),
            pytest.param({"status": "trialing"}, None, None, None, id="trialing"),
            pytest.param(
                {"status": "canceled"}, "not_active", "not_active", "not_active", id="canceled"
            ),
            pytest.param(
                {"status": "incomplete_expired"},
                "not_active",
                "not_active",
                "not_active",
                id="incomplete_expired",
            ),
            *(
                pytest.param({"status": status}, None, None, "not_active", id=status)
                for status in ("past_due", "unpaid", "incomplete", "paused", "frozen")
            ),
            pytest.param(
                {"schedule_id": "sub_sched_1"},
                "has_schedule",
                "has_schedule",
                "has_schedule",
                id="schedule",
            ),
            pytest.param(
                {"items": TWO_PRODUCTS}, None, "multiple_products", None, id="two_products"
            ),
            pytest.param({"items": METERED}, None, "usage_based", None, id="metered"),
            pytest.param(
                {"collection_method": "send_invoice"}, None, "send_invoice", None, id="send_invoice"
            ),
            pytest.param(
                {"status": "canceled", "schedule_id": "sub_sched_1"},
                "not_active",
                "not_active",
                "not_active",
                id="canceled+schedule-first_reason_wins",
            ),
            pytest.param(
                {"status": "past_due", "schedule_id": "sub_sched_1"},
                "has_schedule",
                "has_schedule",
                "not_active",
                id="past_due+schedule",
            ),
            pytest.param(
                {"items": METERED, "collection_method": "send_invoice"},
                None,
                "usage_based",
                None,
                id="metered+send_invoice-first_reason_wins",
            ),
            pytest.param(
                {"items": TWO_PRODUCTS, "schedule_id": "sub_sched_1"},
                "has_schedule",
                "has_schedule",
                "has_schedule",
                id="schedule+two_products",
            ),
        ],
    )
    def test_flows_follow_capabilities(
        self, changes: dict[str, Any], cancel: str | None, update: str | None, pause: str | None
    ) -> None:
        facts = sub(**changes)
        assert {
            flow: refusal_code(flow, facts, target_tax_behavior="exclusive")
            for flow in SUBSCRIPTION_FLOWS
        } == {
            "subscription_cancel": cancel,
            "subscription_update": update,
            "subscription_update_confirm": update,
            "subscription_pause": pause,
        }

    @pytest.mark.parametrize("flow_type", SUBSCRIPTION_FLOWS)
    def test_subscription_flows_need_a_subscription(self, flow_type: str) -> None:
        with pytest.raises(ValueError, match=flow_type):
            flow_refusal(flow_type, None)

    def test_unknown_flow_type_is_a_caller_error(self) -> None:
        with pytest.raises(ValueError, match="subscription_resume"):
            flow_refusal("subscription_resume", sub())


class TestFlowRefusalTaxBehavior:
    @pytest.mark.parametrize(
        ("items", "target", "expected"),
        [
            pytest.param(
                (item(tax_behavior="exclusive"),), "exclusive", None, id="exclusive_to_exclusive"
            ),
            pytest.param(
                (item(tax_behavior="inclusive"),), "inclusive", None, id="inclusive_to_inclusive"
            ),
            pytest.param(
                (item(tax_behavior="exclusive"),),
                "inclusive",
                "tax_behavior_mismatch",
                id="exclusive_to_inclusive",
            ),
            pytest.param(
                (item(tax_behavior="inclusive"),),
                "exclusive",
                "tax_behavior_mismatch",
                id="inclusive_to_exclusive",
            ),
            pytest.param(
                (item(tax_behavior="exclusive"),),
                "unspecified",
                "tax_behavior_mismatch",
                id="exclusive_to_unspecified",
            ),
            pytest.param(
                (item(tax_behavior="unspecified"),),
                "unspecified",
                "tax_behavior_mismatch",
                id="unspecified_to_unspecified",
            ),
            pytest.param(
                (item(tax_behavior="unspecified"),),
                "exclusive",
                "tax_behavior_mismatch",
                id="unspecified_to_exclusive",
            ),
            pytest.param(
                (item(tax_behavior=None),),
                "exclusive",
                "tax_behavior_mismatch",
                id="unknown_current",
            ),
            pytest.param((item(tax_behavior="exclusive"),), None, None, id="no_price_change"),
            # A quantity-only update keeps the current price: Stripe's rule is about prices.
            pytest.param(
                (item(tax_behavior="unspecified"),),
                None,
                None,
                id="no_price_change-current_unspecified",
            ),
            pytest.param((item(tax_behavior=None),), None, None, id="no_price_change-unknown"),
            pytest.param((), "exclusive", "tax_behavior_mismatch", id="no_current_item"),
            pytest.param(
                (
                    item(tax_behavior="exclusive"),
                    item(price_id="price_2", tax_behavior="exclusive"),
                ),
                "exclusive",
                None,
                id="two_items_one_product-same_behavior",
            ),
            pytest.param(
                (
                    item(tax_behavior="exclusive"),
                    item(price_id="price_2", tax_behavior="inclusive"),
                ),
                "exclusive",
                "tax_behavior_mismatch",
                id="two_items_one_product-one_differs",
            ),
        ],
    )
    def test_update_confirm_needs_matching_specified_tax_behavior(
        self, items: tuple[ItemFacts, ...], target: str | None, expected: str | None
    ) -> None:
        facts = sub(items=items)
        assert (
            refusal_code("subscription_update_confirm", facts, target_tax_behavior=target)
            == expected
        )

    @pytest.mark.parametrize(
        "flow_type", ["subscription_update", "subscription_cancel", "subscription_pause"]
    )
    def test_other_flows_ignore_tax_behavior(self, flow_type: str) -> None:
        facts = sub(items=(item(tax_behavior="unspecified"),))
        assert flow_refusal(flow_type, facts, target_tax_behavior="inclusive") is None

    def test_capability_reason_is_reported_before_tax_behavior(self) -> None:
        facts = sub(items=(item(tax_behavior="unspecified"), item(product_id="prod_addon")))
        assert refusal_code("subscription_update_confirm", facts) == "multiple_products"


class TestFlowRefusalDetail:
    @pytest.mark.parametrize(
        ("flow_type", "changes", "target", "expected"),
        [
            pytest.param(
                "subscription_cancel",
                {"status": "canceled"},
                None,
                Refusal(
                    "not_active",
                    "The customer portal cannot cancel a subscription that has already ended "
                    "(status 'canceled').",
                ),
                id="cancel-not_active",
            ),
            pytest.param(
                "subscription_update",
                {"schedule_id": "sub_sched_1"},
                None,
                Refusal(
                    "has_schedule",
                    "The customer portal cannot update a subscription that has a subscription "
                    "schedule attached.",
                ),
                id="update-has_schedule",
            ),
            pytest.param(
                "subscription_cancel",
                {"schedule_id": "sub_sched_1"},
                None,
                Refusal(
                    "has_schedule",
                    "The customer portal cannot cancel a subscription that has a subscription "
                    "schedule attached.",
                ),
                id="cancel-has_schedule",
            ),
            pytest.param(
                "subscription_pause",
                {"status": "past_due"},
                None,
                Refusal(
                    "not_active",
                    "The customer portal can only pause an active or trialing subscription; "
                    "this one is 'past_due'.",
                ),
                id="pause-not_active",
            ),
            pytest.param(
                "subscription_pause",
                {"schedule_id": "sub_sched_1"},
                None,
                Refusal(
                    "has_schedule",
                    "The customer portal cannot pause a subscription that has a subscription "
                    "schedule attached.",
                ),
                id="pause-has_schedule",
            ),
            pytest.param(
                "subscription_update",
                {"items": TWO_PRODUCTS},
                None,
                Refusal(
                    "multiple_products",
                    "The customer portal cannot update a subscription with more than one "
                    "product; it can only cancel it.",
                ),
                id="update-multiple_products",
            ),
            pytest.param(
                "subscription_update",
                {"items": METERED},
                None,
                Refusal(
                    "usage_based",
                    "The customer portal cannot update a subscription with a usage-based "
                    "(metered) price; it can only cancel it.",
                ),
                id="update-usage_based",
            ),
            pytest.param(
                "subscription_update",
                {"collection_method": "send_invoice"},
                None,
                Refusal(
                    "send_invoice",
                    "The customer portal cannot update a subscription that is paid by sent "
                    "invoice (collection_method send_invoice); it can only cancel it.",
                ),
                id="update-send_invoice",
            ),
            pytest.param(
                "subscription_update_confirm",
                {"items": (item(tax_behavior="unspecified"),)},
                "exclusive",
                Refusal(
                    "tax_behavior_mismatch",
                    "The customer portal cannot change the price of a subscription whose "
                    "current price has no tax behavior set (unspecified).",
                ),
                id="confirm-tax_unspecified",
            ),
            pytest.param(
                "subscription_update_confirm",
                {"items": (item(tax_behavior="exclusive"),)},
                "inclusive",
                Refusal(
                    "tax_behavior_mismatch",
                    "The customer portal can only switch to a price with the same tax "
                    "behavior: the current price is 'exclusive' and the new one is 'inclusive'.",
                ),
                id="confirm-tax_differs",
            ),
        ],
    )
    def test_refusal_explains_itself(
        self, flow_type: str, changes: dict[str, Any], target: str | None, expected: Refusal
    ) -> None:
        assert flow_refusal(flow_type, sub(**changes), target_tax_behavior=target) == expected
