"""Offline mode's stand-in for Stripe's hosted portal (README.md, "Offline mode"): the page a
portal session URL opens when no STRIPE_API_KEY is set, and the actions it offers.

Server-rendered HTML with plain forms (no script, so it works with JavaScript off). A form is
accepted only from this page's own origin, with the session's CSRF token and a one-time
nonce (a replayed form changes nothing), then acted on by the offline gateway, which
sends the resulting events to /webhooks. The link is a bearer credential like Stripe's:
never cached, never sent on as a referrer to another origin. Everything shown is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from portal_service.app_state import app_state
from portal_service.gateway import offline_objects as sim
from portal_service.gateway import offline_subscriptions as subs
from portal_service.gateway.offline import OfflineGateway
from portal_service.gateway.offline_page import FormRejected, PortalState, SessionUnavailable
from portal_service.portal.offline_i18n import has_text, language, translate
from portal_service.portal.offline_rules import PORTAL_RULES

router = APIRouter()

_MAX_FORM_BYTES = 16_384
_MAX_TOKEN_LENGTH = 128
_HEADERS = {
    "Cache-Control": "no-store",
    # The URL holds the session token: only this origin ever sees it as a referrer.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
}
# Colours meet WCAG AA contrast (4.5:1 and more) on white; focus is always visible.
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:46rem;margin:0 auto;padding:1rem;"
    "color:#1a1a1a;background:#fff;line-height:1.5}"
    "a{color:#0b57d0}a:focus,button:focus,input:focus,select:focus{outline:3px solid #1a1a1a;"
    "outline-offset:2px}"
    ".skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem}"
    "section{border-top:1px solid #c4c4c4;padding:.5rem 0 1rem}"
    ".card{border:1px solid #c4c4c4;border-radius:.5rem;padding:.75rem 1rem;margin:.5rem 0}"
    "button{background:#0b57d0;color:#fff;border:0;border-radius:.4rem;padding:.5rem 1rem;"
    "font-size:1rem;cursor:pointer;margin:.25rem .5rem .25rem 0}"
    "button.secondary{background:#fff;color:#0b57d0;border:1px solid #0b57d0}"
    "button.danger{background:#a50e0e}"
    "label{display:block;margin:.5rem 0 .15rem;font-weight:600}"
    "input,select{font-size:1rem;padding:.35rem;border:1px solid #5f5f5f;border-radius:.3rem}"
    "fieldset{border:1px solid #c4c4c4;border-radius:.4rem;margin:.5rem 0}"
    ".note{background:#fff4ce;padding:.75rem 1rem;border-radius:.4rem}"
    ".ok{background:#e6f4ea;padding:.75rem 1rem;border-radius:.4rem}"
    ".error{color:#a50e0e;font-weight:600}"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .5rem;"
    "border-bottom:1px solid #c4c4c4}"
    "form.inline{display:inline}"
)
_VIEWS = {"home", "cancel", "update", "pause", "card", "customer", "confirmation"}
_FLOW_VIEWS = {
    "subscription_cancel": "cancel",
    "subscription_update": "update",
    "subscription_update_confirm": "update",
    "subscription_pause": "pause",
    "payment_method_update": "card",
    "customer_update": "customer",
}
# The action that completes each flow (then after_completion applies).
_FLOW_ACTIONS = {
    "subscription_cancel": {"cancel"},
    "subscription_update": {"update"},
    "subscription_update_confirm": {"update"},
    "subscription_pause": {"pause"},
    "payment_method_update": {"add_card"},
    "customer_update": {"update_customer", "add_tax_id"},
}


def _gateway(request: Request) -> OfflineGateway | None:
    gateway = app_state(request).gateway
    # The page exists only in offline mode: with Stripe connected, every link is unknown.
    return gateway.stand_in


def _page(lang: str, title: str, body: str, *, status: int = 200) -> HTMLResponse:
    html = (
        f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<a class='skip' href='#main'>{escape(translate(lang, 'skip'))}</a>"
        f"{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _error_page(lang: str, message: str, *, status: int, back: str | None = None) -> HTMLResponse:
    link = (
        f"<p><a href='{escape(back)}'>{escape(translate(lang, 'back_to_portal'))}</a></p>"
        if back
        else ""
    )
    title = translate(lang, "error_title")
    body = (
        f"<main id='main'><h1>{escape(title)}</h1>"
        f"<p class='error' role='alert'>{escape(message)}</p>{link}</main>"
    )
    return _page(lang, title, body, status=status)


def _browser_language(request: Request) -> str:
    header = request.headers.get("accept-language", "")
    return language(None, [part.strip() for part in header.split(",") if part.strip()])


def _unavailable(request: Request, exc: SessionUnavailable | None) -> HTMLResponse:
    lang = _browser_language(request)
    expired = exc is not None and exc.expired
    key = "error_expired" if expired else "error_invalid"
    return _error_page(lang, translate(lang, key), status=410 if expired else 404)


def _lang_of(request: Request, state: PortalState) -> str:
    header = request.headers.get("accept-language", "")
    browser = [part.strip() for part in header.split(",") if part.strip()]
    return language(
        state.session.get("locale"), [*state.customer.get("preferred_locales", []), *browser]
    )


@router.get("/offline/portal/{token}", response_class=HTMLResponse, include_in_schema=False)
async def offline_portal(request: Request, token: str) -> Response:
    gateway = _gateway(request)
    if gateway is None or len(token) > _MAX_TOKEN_LENGTH:
        return _unavailable(request, None)
    try:
        state = await gateway.open_session(token)
    except SessionUnavailable as exc:
        return _unavailable(request, exc)
    await gateway.deliver()
    nonce = await gateway.issue_nonce(state.session_id)
    lang = _lang_of(request, state)
    flow = state.session.get("flow") or {}
    view = request.query_params.get("view")
    if view not in _VIEWS:
        view = _FLOW_VIEWS.get(str(flow.get("type")), "home") if not state.completed else "home"
    page = _Renderer(state, lang=lang, nonce=nonce, action=request.url.path)
    return _page(lang, page.title, page.render(view, request.query_params))


@router.post("/offline/portal/{token}", response_class=HTMLResponse, include_in_schema=False)
async def offline_portal_action(request: Request, token: str) -> Response:
    gateway = _gateway(request)
    if gateway is None or len(token) > _MAX_TOKEN_LENGTH:
        return _unavailable(request, None)
    lang = _browser_language(request)
    if not _same_origin(request):
        return _error_page(lang, translate(lang, "error_csrf"), status=403)
    fields = await _form(request)
    if fields is None or not fields.get("action"):
        return _error_page(lang, translate(lang, "error_invalid_form"), status=400)
    try:
        state = await gateway.accept_form(
            token, csrf=fields.get("csrf", ""), nonce=fields.get("nonce", "")
        )
    except SessionUnavailable as exc:
        return _unavailable(request, exc)
    except FormRejected as exc:
        key = "error_replayed" if exc.reason == "replayed" else "error_csrf"
        return _error_page(
            lang,
            translate(lang, key),
            status=409 if exc.reason == "replayed" else 403,
            back=request.url.path,
        )
    lang = _lang_of(request, state)
    action = fields["action"]
    try:
        await gateway.act(state, action, fields, rules=PORTAL_RULES)
    except sim.ActionRefused as exc:
        # Stripe's own words where the page has them in this language, else the detail.
        key = f"refused_{exc.reason}"
        detail = translate(lang, key) if has_text(key) else exc.detail
        return _error_page(
            lang,
            translate(lang, "error_action", detail=detail),
            status=exc.status,
            back=request.url.path,
        )
    return await _after_action(gateway, request, state, action)


async def _after_action(
    gateway: OfflineGateway, request: Request, state: PortalState, action: str
) -> Response:
    flow = state.session.get("flow") or {}
    flow_type = str(flow.get("type") or "")
    here = request.url.path
    if state.completed or action not in _FLOW_ACTIONS.get(flow_type, set()):
        return RedirectResponse(f"{here}?done=1", status_code=303, headers=_HEADERS)
    await gateway.complete(state.session_id)
    after = flow.get("after_completion") or {}
    if after.get("type") == "redirect":
        target = (after.get("redirect") or {}).get("return_url") or state.session.get("return_url")
        if target:
            return RedirectResponse(str(target), status_code=303, headers=_HEADERS)
    if after.get("type") == "hosted_confirmation":
        return RedirectResponse(f"{here}?view=confirmation", status_code=303, headers=_HEADERS)
    return RedirectResponse(f"{here}?done=1", status_code=303, headers=_HEADERS)


@router.get("/offline/return", response_class=HTMLResponse, include_in_schema=False)
async def offline_return(request: Request) -> HTMLResponse:
    lang = _browser_language(request)
    title = translate(lang, "returned_title")
    body = (
        f"<main id='main'><h1>{escape(title)}</h1>"
        f"<p>{escape(translate(lang, 'returned_body'))}</p>"
        "<p><a href='/docs'>/docs</a></p></main>"
    )
    return _page(lang, title, body)


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _same_origin(request: Request) -> bool:
    """The form was posted by a page of this origin: its Origin header (every browser
    sends one on a POST), else its Referer; neither is refused."""
    own = _origin_of(str(request.base_url))
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() == own
    referer = request.headers.get("referer")
    return referer is not None and _origin_of(referer) == own


async def _form(request: Request) -> dict[str, str] | None:
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return None
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    fields: dict[str, str] = {}
    for key, value in pairs:
        # One value per field: a duplicated field is an odd form, the first one counts.
        fields.setdefault(key, value)
    return fields


def _date(ts: Any) -> str:
    if not isinstance(ts, int):
        return "—"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


def _money(amount: Any, currency: Any) -> str:
    if not isinstance(amount, int):
        return "—"
    return f"{amount / 100:.2f} {str(currency or '').upper()}".strip()


class _Renderer:
    def __init__(self, state: PortalState, *, lang: str, nonce: str, action: str) -> None:
        self.state = state
        self.lang = lang
        self.nonce = nonce
        self.action = action
        profile = state.configuration.get("business_profile") or {}
        self.business = str(profile.get("headline") or "") or translate(lang, "your_business")
        self.title = f"{translate(lang, 'title')} · {self.business}"

    def t(self, key: str, **values: str) -> str:
        return escape(translate(self.lang, key, **values))

    def form(
        self, action: str, inner: str, *, fields: dict[str, str] | None = None, inline: bool = False
    ) -> str:
        hidden = {"csrf": self.state.csrf_token, "nonce": self.nonce, "action": action}
        hidden.update(fields or {})
        inputs = "".join(
            f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>"
            for k, v in hidden.items()
        )
        cls = " class='inline'" if inline else ""
        return f"<form method='post' action='{escape(self.action)}'{cls}>{inputs}{inner}</form>"

    def link(self, label: str, **query: str) -> str:
        return f"<a href='?{escape(urlencode(query))}'>{escape(label)}</a>"

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

    def _price_label(self, price: dict[str, Any]) -> str:
        product = self.state.products.get(str(price.get("product"))) or {}
        name = str(product.get("name") or price.get("product") or "")
        nickname = price.get("nickname")
        interval = (price.get("recurring") or {}).get("interval") or ""
        amount = _money(price.get("unit_amount"), price.get("currency"))
        label = f"{name} {nickname}" if nickname else name
        return f"{label} — {amount} / {interval}"

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
            when = self.t("ended_on", date=_date(sub.get("ended_at")))
        elif sub.get("cancel_at_period_end") or sub.get("cancel_at"):
            when = self.t("cancels_on", date=_date(sub.get("cancel_at") or end))
        else:
            when = self.t("renews_on", date=_date(end))
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
            else self.t("cancel_confirm_period_end", date=_date(end))
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
                f"<tr><td>{_date(invoice.get('created'))}</td>"
                f"<td>{escape(_money(invoice.get('amount_due'), invoice.get('currency')))}</td>"
                f"<td>{label}</td><td>{escape(str(invoice.get('number') or invoice['id']))}</td></tr>"
            )
        parts.append(f"<table><tbody>{''.join(rows)}</tbody></table></section>")
        return "".join(parts)

    def confirmation_view(self) -> str:
        flow = self.state.session.get("flow") or {}
        custom = ((flow.get("after_completion") or {}).get("hosted_confirmation") or {}).get(
            "custom_message"
        )
        message = escape(str(custom)) if custom else self.t("confirmation")
        return f"<p class='ok' role='status'>{message}</p>"

    def back(self) -> str:
        return f"<p><a href='{escape(self.action)}?view=home'>{self.t('go_back')}</a></p>"


_REASON_KEYS = {
    "reason_too_expensive",
    "reason_missing_features",
    "reason_unused",
    "reason_other",
}


def _find(objects: Iterable[dict[str, Any]], object_id: str | None) -> dict[str, Any] | None:
    return next((o for o in objects if object_id and o.get("id") == object_id), None)
