"""The offline portal page's HTML (offline.py serves it): the views of one session — home,
cancel, update, pause, card, customer, confirmation — with their forms, each carrying the
session's CSRF token and a one-time nonce. Everything shown is escaped; what a subscription
offers comes from the stand-in under the portal's rules (offline_rules.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

from portal_service.gateway import offline_objects as sim
from portal_service.portal.offline_customer_views import CustomerViews
from portal_service.portal.offline_subscription_views import SubscriptionViews


class PageRenderer(SubscriptionViews, CustomerViews):
    """The HTML of one view of the page for one session, every value escaped."""

    def render(self, view: str, query: Any) -> str:
        state = self.state
        profile = state.configuration.get("business_profile") or {}
        return_url = state.session.get("return_url")
        header = f"<header><p><strong>{escape(self.business)}</strong></p>"
        if return_url:
            header += (
                f"<p><a href='{escape(str(return_url))}'>← "
                f"{self.t('return', business=self.business)}</a></p>"
            )
        header += "</header>"
        notice = f"<p class='note'>{self.t('offline_note')}</p>"
        if query.get("done") and view == "home":
            notice += f"<p class='ok' role='status'>{self.t('done')}</p>"
        sub = (
            _find(state.subscriptions, query.get("sub"))
            or self._flow_subscription()
            or next(iter(state.subscriptions), None)
        )
        if view == "cancel" and sub is not None:
            content = self.cancel_view(sub)
        elif view == "update" and sub is not None:
            content = self.update_view(sub)
        elif view == "pause" and sub is not None:
            content = self.pause_view(sub)
        elif view == "card":
            content = self.card_view()
        elif view == "customer":
            content = self.customer_view()
        elif view == "confirmation":
            content = self.confirmation_view()
        else:
            content = self.home()
        footer_links = [
            f"<a href='{escape(str(profile[key]))}'>{self.t(label)}</a>"
            for key, label in (("terms_of_service_url", "terms"), ("privacy_policy_url", "privacy"))
            if profile.get(key)
        ]
        footer = f"<footer><p>{' · '.join(footer_links)}</p></footer>" if footer_links else ""
        return f"{header}<main id='main'><h1>{self.t('title')}</h1>{notice}{content}</main>{footer}"

    def _flow_subscription(self) -> dict[str, Any] | None:
        flow = self.state.session.get("flow") or {}
        flow_type = str(flow.get("type") or "")
        sub_id = (flow.get(flow_type) or {}).get("subscription")
        return _find(self.state.subscriptions, sub_id)

    def home(self) -> str:
        state = self.state
        parts = [f"<section aria-labelledby='subs'><h2 id='subs'>{self.t('subscriptions')}</h2>"]
        if not state.subscriptions:
            parts.append(f"<p>{self.t('no_subscriptions')}</p>")
        for sub in state.subscriptions:
            parts.append(self.subscription_card(sub))
        parts.append("</section>")
        if sim.feature(state.configuration, "payment_method_update"):
            parts.append(self.payment_methods())
        if sim.feature(state.configuration, "customer_update"):
            parts.append(self.customer_summary())
        if sim.feature(state.configuration, "invoice_history"):
            parts.append(self.invoices())
        return "".join(parts)

    def confirmation_view(self) -> str:
        flow = self.state.session.get("flow") or {}
        custom = ((flow.get("after_completion") or {}).get("hosted_confirmation") or {}).get(
            "custom_message"
        )
        message = escape(str(custom)) if custom else self.t("confirmation")
        return f"<p class='ok' role='status'>{message}</p>"


def _find(objects: Iterable[dict[str, Any]], object_id: str | None) -> dict[str, Any] | None:
    return next((o for o in objects if object_id and o.get("id") == object_id), None)
