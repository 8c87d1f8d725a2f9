"""The offline portal page's customer views: cards, the customer's details and tax ids,
and the invoices."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from portal_service.gateway import offline_objects as sim
from portal_service.portal.offline_i18n import translate
from portal_service.portal.offline_view import View, date_text, money_text


class CustomerViews(View):
    def payment_methods(self) -> str:
        state = self.state
        default = state.customer.get("invoice_settings", {}).get("default_payment_method")
        parts = [f"<section aria-labelledby='pms'><h2 id='pms'>{self.t('payment_methods')}</h2>"]
        if not state.payment_methods:
            parts.append(f"<p>{self.t('no_payment_methods')}</p>")
        for method in state.payment_methods:
            card = method.get("card") or {}
            exp = f"{int(card.get('exp_month') or 0):02d}/{card.get('exp_year')}"
            label = (
                f"{str(card.get('brand') or method.get('type')).title()} •••• {card.get('last4')}"
            )
            field = {"payment_method": str(method["id"])}
            controls = ""
            if method["id"] == default:
                controls += f" <strong>({self.t('default')})</strong>"
            else:
                controls += self.form(
                    "default_card",
                    f"<button class='secondary' aria-label='{self.t('make_default')}: {escape(label)}'>{self.t('make_default')}</button>",
                    fields=field,
                    inline=True,
                )
            paying = any(s.get("status") not in sim.ENDED_STATUSES for s in state.subscriptions)
            # Stripe's portal keeps the default card of a customer who still pays.
            if method["id"] != default or not paying:
                controls += self.form(
                    "remove_card",
                    f"<button class='secondary' aria-label='{self.t('remove')}: {escape(label)}'>{self.t('remove')}</button>",
                    fields=field,
                    inline=True,
                )
            parts.append(
                f"<div class='card'><p>{escape(label)} — {self.t('expires', date=exp)}</p>{controls}</div>"
            )
        parts.append(f"<p>{self.link(translate(self.lang, 'add_card'), view='card')}</p></section>")
        return "".join(parts)

    def card_view(self) -> str:
        year = datetime.now(UTC).year
        months = "".join(f"<option value='{m}'>{m:02d}</option>" for m in range(1, 13))
        years = "".join(f"<option value='{y}'>{y}</option>" for y in range(year, year + 11))
        inner = (
            f"<label for='number'>{self.t('card_number')}</label>"
            "<input id='number' name='number' autocomplete='off' inputmode='numeric' required "
            "value='4242 4242 4242 4242'>"
            f"<label for='exp_month'>{self.t('exp_month')}</label>"
            f"<select id='exp_month' name='exp_month'>{months}</select>"
            f"<label for='exp_year'>{self.t('exp_year')}</label>"
            f"<select id='exp_year' name='exp_year'>{years}</select>"
            "<p><input type='checkbox' id='make_default' name='make_default' checked>"
            f"<label for='make_default' style='display:inline'> {self.t('use_as_default')}</label></p>"
            f"<p><button>{self.t('add_card')}</button></p>"
        )
        return f"<h2>{self.t('add_card')}</h2>{self.form('add_card', inner)}{self.back()}"

    def customer_summary(self) -> str:
        customer = self.state.customer
        address = customer.get("address") or {}
        rows = [
            (self.t("email"), escape(str(customer.get("email") or "—"))),
            (self.t("name"), escape(str(customer.get("name") or "—"))),
            (self.t("address"), escape(", ".join(str(v) for v in address.values() if v) or "—")),
        ]
        table = "".join(f"<tr><th scope='row'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        taxes = self.tax_ids(editable=False)
        return (
            f"<section aria-labelledby='cust'><h2 id='cust'>{self.t('customer')}</h2>"
            f"<table>{table}</table>{taxes}"
            f"<p>{self.link(translate(self.lang, 'edit_details'), view='customer')}</p></section>"
        )

    def tax_ids(self, *, editable: bool) -> str:
        allowed = (
            sim.feature(self.state.configuration, "customer_update").get("allowed_updates") or []
        )
        if "tax_id" not in allowed:
            return ""
        parts = [f"<h3>{self.t('tax_ids')}</h3>"]
        if not self.state.tax_ids:
            parts.append(f"<p>{self.t('no_tax_ids')}</p>")
        for tax_id in self.state.tax_ids:
            label = f"{tax_id.get('type')}: {tax_id.get('value')}"
            remove = (
                self.form(
                    "remove_tax_id",
                    f"<button class='secondary' aria-label='{self.t('remove')}: {escape(label)}'>{self.t('remove')}</button>",
                    fields={"tax_id": str(tax_id["id"])},
                    inline=True,
                )
                if editable
                else ""
            )
            parts.append(f"<div class='card'>{escape(label)} {remove}</div>")
        if editable:
            options = "".join(f"<option value='{t}'>{t}</option>" for t in sim.TAX_ID_TYPES)
            inner = (
                f"<label for='tax_type'>{self.t('tax_type')}</label>"
                f"<select id='tax_type' name='tax_type'>{options}</select>"
                f"<label for='tax_value'>{self.t('tax_value')}</label>"
                "<input id='tax_value' name='tax_value' required autocomplete='off'>"
                f"<p><button>{self.t('add_tax_id')}</button></p>"
            )
            parts.append(self.form("add_tax_id", inner))
        return "".join(parts)

    def customer_view(self) -> str:
        customer = self.state.customer
        allowed = (
            sim.feature(self.state.configuration, "customer_update").get("allowed_updates") or []
        )
        address = customer.get("address") or {}
        inner = ""
        if "email" in allowed:
            inner += self._input("email", "email", str(customer.get("email") or ""), kind="email")
        if "name" in allowed:
            inner += self._input("name", "name", str(customer.get("name") or ""))
        if "address" in allowed:
            for key in ("line1", "line2", "postal_code", "city", "state", "country"):
                inner += self._input(
                    f"address_{key}", f"address_{key}", str(address.get(key) or "")
                )
        inner += f"<p><button>{self.t('save')}</button></p>"
        return (
            f"<h2>{self.t('customer')}</h2>{self.form('update_customer', inner)}"
            f"{self.tax_ids(editable=True)}{self.back()}"
        )

    def _input(self, name: str, label: str, value: str, *, kind: str = "text") -> str:
        return (
            f"<label for='{name}'>{self.t(label)}</label>"
            f"<input id='{name}' name='{name}' type='{kind}' value='{escape(value)}'>"
        )

    def invoices(self) -> str:
        parts = [f"<section aria-labelledby='inv'><h2 id='inv'>{self.t('invoices')}</h2>"]
        if not self.state.invoices:
            parts.append(f"<p>{self.t('no_invoices')}</p></section>")
            return "".join(parts)
        rows = []
        for invoice in self.state.invoices:
            status = str(invoice.get("status") or "")
            key = f"invoice_{status}"
            label = (
                self.t(key)
                if key in {"invoice_paid", "invoice_open"}
                else self.t("invoice_other", status=status)
            )
            rows.append(
                f"<tr><td>{date_text(invoice.get('created'))}</td>"
                f"<td>{escape(money_text(invoice.get('amount_due'), invoice.get('currency')))}</td>"
                f"<td>{label}</td><td>{escape(str(invoice.get('number') or invoice['id']))}</td></tr>"
            )
        parts.append(f"<table><tbody>{''.join(rows)}</tbody></table></section>")
        return "".join(parts)
