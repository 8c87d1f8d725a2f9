"""The portal's rules handed to the offline stand-in: its portal page offers a customer what
GET /me/subscriptions' `portal` object and POST /portal-sessions' flow checks allow
(access/policy.py), judged from the typed payload like a subscription fetched for a flow.

The gateway knows no policy of its own and imports no layer above it (ARCHITECTURE.md,
"Rules of dependency"): the page passes `PORTAL_RULES` to the stand-in's actions.
"""

from __future__ import annotations

from typing import Any, Final

from portal_service.access.policy import flow_refusal, portal_capabilities
from portal_service.gateway.offline_objects import ActionRefused
from portal_service.gateway.offline_subscriptions import Verdict
from portal_service.mirror import stripe_models
from portal_service.portal.flows import facts_from_stripe


class PolicyRules:
    """`PortalRules` (gateway/offline_subscriptions.py) from access/policy.py's decisions."""

    def verdict(self, sub: dict[str, Any]) -> Verdict:
        facts = facts_from_stripe(stripe_models.Subscription.model_validate(sub))
        caps = portal_capabilities(facts)
        return Verdict(
            status=facts.status,
            cancel_at_period_end=facts.cancel_at_period_end,
            paused=facts.pause_collection_behavior is not None,
            product_ids=frozenset(item.product_id for item in facts.items),
            price_ids=frozenset(item.price_id for item in facts.items),
            metered=any(item.usage_type == "metered" for item in facts.items),
            can_update=caps.can_update,
            can_cancel=caps.can_cancel,
            can_pause=flow_refusal("subscription_pause", facts) is None,
            reasons=caps.reasons,
        )

    def price_change_refusal(
        self, sub: dict[str, Any], *, tax_behavior: str | None
    ) -> ActionRefused | None:
        facts = facts_from_stripe(stripe_models.Subscription.model_validate(sub))
        refusal = flow_refusal(
            "subscription_update_confirm", facts, target_tax_behavior=tax_behavior
        )
        return None if refusal is None else ActionRefused(refusal.code, refusal.detail)


PORTAL_RULES: Final = PolicyRules()
