"""Offline mode's stand-in for Stripe's hosted portal (README.md, "Offline mode"): the page a
portal session URL opens when no STRIPE_API_KEY is set, and the actions it offers.

Server-rendered HTML with plain forms (no script, so it works with JavaScript off). A form is
accepted only from this page's own origin, with the session's CSRF token and a one-time
nonce (a replayed form changes nothing), then acted on by the offline gateway, which
sends the resulting events to /webhooks. The link is a bearer credential like Stripe's:
never cached, never sent on as a referrer to another origin. Everything shown is escaped.
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from portal_service.app_state import app_state
from portal_service.gateway import offline_objects as sim
from portal_service.gateway.offline import OfflineGateway
from portal_service.gateway.offline_page import FormRejected, PortalState, SessionUnavailable
from portal_service.portal.offline_i18n import has_text, language, translate
from portal_service.portal.offline_page import PageRenderer
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
    page = PageRenderer(state, lang=lang, nonce=nonce, action=request.url.path)
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
