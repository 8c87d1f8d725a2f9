"""What every view of the offline portal page shares: the session's state and language, the
translated text, the forms (CSRF token and one-time nonce) and links, dates and amounts."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from portal_service.gateway.offline_page import PortalState
from portal_service.portal.offline_i18n import translate


def date_text(ts: Any) -> str:
    if not isinstance(ts, int):
        return "—"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


def money_text(amount: Any, currency: Any) -> str:
    if not isinstance(amount, int):
        return "—"
    return f"{amount / 100:.2f} {str(currency or '').upper()}".strip()


class View:
    """One page of one session; every value shown is escaped."""

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

    def back(self) -> str:
        return f"<p><a href='{escape(self.action)}?view=home'>{self.t('go_back')}</a></p>"
