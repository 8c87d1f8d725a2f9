"""The offline portal page's subscription views: the card of each subscription, and the
cancel, update and pause forms, offering what the stand-in offers under the portal's rules."""

from __future__ import annotations

from html import escape
from typing import Any

from portal_service.gateway import offline_objects as sim
from portal_service.gateway import offline_subscriptions as subs
from portal_service.portal.offline_i18n import translate
from portal_service.portal.offline_rules import PORTAL_RULES
from portal_service.portal.offline_view import View, date_text, money_text

_REASON_KEYS = {
    "reason_too_expensive",
    "reason_missing_features",
    "reason_unused",
    "reason_other",
}


class SubscriptionViews(View):
    def _price_label(self, price: dict[str, Any]) -> str:
        product = self.state.products.get(str(price.get("product"))) or {}
        name = str(product.get("name") or price.get("product") or "")
        nickname = price.get("nickname")
        interval = (price.get("recurring") or {}).get("interval") or ""
        amount = money_text(price.get("unit_amount"), price.get("currency"))
        label = f"{name} {nickname}" if nickname else name
        return f"{label} — {amount} / {interval}"

    def subscription_card(self, sub: dict[str, Any]) -> str:
        terms = subs.offer(sub, self.state.configuration, rules=PORTAL_RULES)
        status = str(sub.get("status") or "")
        status_key = f"status_{status}"
        status_text = (
            self.t(status_key)
            if status_key
            in {"status_active", "status_trialing", "status_canceled", "status_past_due"}
            else self.t("status_other", status=status)
        )
        items = "".join(
            f"<li>{escape(self._price_label(item['price']))} x "
            f"<span data-testid='quantity'>{escape(str(item.get('quantity')))}</span></li>"
            for item in sub["items"]["data"]
        )
        end = min(
            (i["current_period_end"] for i in sub["items"]["data"] if i.get("current_period_end")),
            default=None,
        )
        if status in sim.ENDED_STATUSES:
            when = self.t("ended_on", date=date_text(sub.get("ended_at")))
        elif sub.get("cancel_at_period_end") or sub.get("cancel_at"):
            when = self.t("cancels_on", date=date_text(sub.get("cancel_at") or end))
        else:
            when = self.t("renews_on", date=date_text(end))
        paused = f"<p>{self.t('collection_paused')}</p>" if sub.get("pause_collection") else ""
        actions = []
        sub_field = {"subscription": str(sub["id"])}
        if terms.can_update:
            actions.append(self.link(translate(self.lang, "update"), view="update", sub=sub["id"]))
        if terms.can_cancel:
            actions.append(self.link(translate(self.lang, "cancel"), view="cancel", sub=sub["id"]))
        if terms.can_pause:
            actions.append(self.link(translate(self.lang, "pause"), view="pause", sub=sub["id"]))
        buttons = []
        if terms.can_reactivate:
            buttons.append(
                self.form(
                    "reactivate",
                    f"<button>{self.t('reactivate')}</button>",
                    fields=sub_field,
                    inline=True,
                )
            )
        if terms.can_resume:
            buttons.append(
                self.form(
                    "resume", f"<button>{self.t('resume')}</button>", fields=sub_field, inline=True
                )
            )
        blocked = ""
        if terms.reasons and status not in sim.ENDED_STATUSES:
            blocked = f"<p>{self.t('not_available', reasons=', '.join(terms.reasons))}</p>"
        links = " · ".join(actions)
        return (
            f"<div class='card' data-subscription='{escape(str(sub['id']))}'>"
            f"<p><strong>{status_text}</strong> — {when}</p><ul>{items}</ul>{paused}{blocked}"
            f"<p>{links}</p>{''.join(buttons)}</div>"
        )

    def cancel_view(self, sub: dict[str, Any]) -> str:
        terms = subs.offer(sub, self.state.configuration, rules=PORTAL_RULES)
        if not terms.can_cancel:
            return f"<p class='error'>{self.t('error_action', detail='—')}</p>{self.back()}"
        end = min(i.get("current_period_end") or 0 for i in sub["items"]["data"]) or None
        mode = terms.cancel_mode or "at_period_end"
        text = (
            self.t("cancel_confirm_now")
            if mode == "immediately"
            else self.t("cancel_confirm_period_end", date=date_text(end))
        )
        options = (
            sim.feature(self.state.configuration, "subscription_cancel").get("cancellation_reason")
            or {}
        )
        reasons = ""
        if options.get("enabled"):
            choices = "".join(
                f"<option value='{escape(str(o))}'>{self.t('reason_' + str(o)) if 'reason_' + str(o) in _REASON_KEYS else escape(str(o))}</option>"
                for o in options.get("options") or []
            )
            reasons = (
                f"<label for='reason'>{self.t('reason')}</label>"
                f"<select id='reason' name='reason'><option value=''>{self.t('reason_none')}</option>"
                f"{choices}</select>"
            )
        label = "cancel_now" if mode == "immediately" else "cancel_at_period_end"
        inner = f"<p>{text}</p>{reasons}<p><button class='danger'>{self.t(label)}</button></p>"
        return (
            f"<h2>{self.t('cancel')}</h2>"
            + self.form("cancel", inner, fields={"subscription": str(sub["id"]), "mode": mode})
            + self.back()
        )

    def update_view(self, sub: dict[str, Any]) -> str:
        terms = subs.offer(sub, self.state.configuration, rules=PORTAL_RULES)
        if not terms.can_update:
            reasons = ", ".join(terms.reasons) or "—"
            return f"<p class='error'>{self.t('not_available', reasons=reasons)}</p>{self.back()}"
        item = sub["items"]["data"][0]
        preset = self._confirm_preset(item)
        parts = [f"<h2>{self.t('update')}</h2>"]
        inner = ""
        if terms.quantity:
            quantity = preset.get("quantity") or item.get("quantity") or 1
            inner += (
                f"<label for='quantity'>{self.t('quantity')}</label>"
                f"<input id='quantity' name='quantity' type='number' inputmode='numeric' "
                f"min='1' max='{sim.MAX_QUANTITY}' required value='{escape(str(quantity))}'>"
            )
        if terms.prices:
            chosen = preset.get("price") or item["price"]["id"]
            radios = [
                self._radio(
                    item["price"]["id"],
                    self.t("keep_plan") + " — " + escape(self._price_label(item["price"])),
                    chosen,
                )
            ]
            for price_id in terms.prices:
                price = self.state.prices.get(price_id)
                if price is not None:
                    radios.append(self._radio(price_id, escape(self._price_label(price)), chosen))
            inner += (
                f"<fieldset><legend>{self.t('switch_plan')}</legend>{''.join(radios)}</fieldset>"
            )
        inner += f"<p><button>{self.t('confirm')}</button></p>"
        parts.append(self.form("update", inner, fields={"subscription": str(sub["id"])}))
        parts.append(self.back())
        return "".join(parts)

    def _confirm_preset(self, item: dict[str, Any]) -> dict[str, Any]:
        flow = self.state.session.get("flow") or {}
        if flow.get("type") != "subscription_update_confirm" or self.state.completed:
            return {}
        for preset in (flow.get("subscription_update_confirm") or {}).get("items") or []:
            if preset.get("id") == item.get("id"):
                return dict(preset)
        return {}

    def _radio(self, value: str, label: str, chosen: str) -> str:
        ident = f"price-{escape(value)}"
        checked = " checked" if value == chosen else ""
        return (
            f"<div><input type='radio' id='{ident}' name='price' value='{escape(value)}'{checked}>"
            f"<label for='{ident}' style='display:inline;font-weight:400'> {label}</label></div>"
        )

    def pause_view(self, sub: dict[str, Any]) -> str:
        inner = f"<p><button>{self.t('pause')}</button></p>"
        return (
            f"<h2>{self.t('pause')}</h2>"
            + self.form("pause", inner, fields={"subscription": str(sub["id"])})
            + self.back()
        )
