"""Return URLs and locales through POST /portal-sessions: the API-level tables (the unit
tables live in test_return_urls.py and test_locales.py), and where a return URL comes
from when the request has none."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from portal.fakes import Mirror, StripeFake
from portal_service.config import ConfigError
from support import backend_headers, user_headers

ALLOWLIST = "https://app.example.com/billing,myapp://"
DEFAULT_URL = "https://app.example.com/billing"

RETURN_URLS = [
    pytest.param("https://app.example.com/billing", True, id="the-prefix"),
    pytest.param("https://app.example.com/billing/invoices?tab=1#top", True, id="under-the-prefix"),
    pytest.param(
        "https://APP.example.com:443/billing/", True, id="same-origin-spelled-differently"
    ),
    pytest.param("myapp://account/done", True, id="listed-custom-scheme"),
    pytest.param("https://app.example.com/billingx", False, id="prefix-not-on-a-segment"),
    pytest.param("https://app.example.com/admin", False, id="outside-the-prefix"),
    pytest.param("https://evil.example.com/billing", False, id="other-host"),
    pytest.param("https://app.example.com.evil.test/billing", False, id="host-suffix"),
    pytest.param("http://app.example.com/billing", False, id="other-scheme"),
    pytest.param("https://app.example.com:8443/billing", False, id="other-port"),
    pytest.param("https://user:pw@app.example.com/billing", False, id="userinfo"),
    pytest.param("https://app.example.com@evil.test/billing", False, id="userinfo-host-confusion"),
    pytest.param("https://app.example.com\\@evil.test/billing", False, id="backslash"),
    pytest.param("https://app.example.com/billing/../admin", False, id="dot-segments-escape"),
    pytest.param("https://app.example.com/billing/%2e%2e/admin", False, id="encoded-dot-segments"),
    pytest.param("https://app.example.com/billing/%252e%252e/admin", False, id="double-encoded"),
    pytest.param("//evil.test/billing", False, id="protocol-relative"),
    pytest.param("/billing", False, id="relative"),
    pytest.param("javascript:alert(1)//https://app.example.com/billing", False, id="javascript"),
    pytest.param("data:text/html,<script>alert(1)</script>", False, id="data"),
    pytest.param("otherapp://account", False, id="unlisted-custom-scheme"),
    pytest.param("https://app.example.com/billing\r\nSet-Cookie: a=b", False, id="crlf"),
    pytest.param("https:\\\\evil.test/billing", False, id="backslash-authority"),
    pytest.param("https://app.example.com/billing\t", False, id="tab"),
]


@pytest.fixture
async def offline(client_factory: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_factory(
        portal_return_url_allowlist=ALLOWLIST,
        portal_default_return_url=DEFAULT_URL,
        rate_limit_portal_sessions="1000/minute",
    ) as client:
        yield client


@pytest.mark.sqlite
class TestReturnUrlAllowlistApi:
    @pytest.mark.parametrize(("url", "allowed"), RETURN_URLS)
    async def test_return_url(self, offline: httpx.AsyncClient, url: str, allowed: bool) -> None:
        response = await offline.post(
            "/portal-sessions", headers=user_headers("u1"), json={"return_url": url}
        )
        if allowed:
            assert response.status_code == 201, response.json()
            assert response.json()["return_url"] == url
        else:
            assert response.status_code == 422
            assert response.json()["code"] == "return_url_not_allowed"

    @pytest.mark.parametrize(("url", "allowed"), RETURN_URLS)
    async def test_after_completion_return_url(
        self, offline: httpx.AsyncClient, url: str, allowed: bool
    ) -> None:
        flow = {
            "type": "payment_method_update",
            "after_completion": {"type": "redirect", "return_url": url},
        }
        response = await offline.post(
            "/portal-sessions", headers=user_headers("u1"), json={"flow": flow}
        )
        if allowed:
            assert response.status_code == 201, response.json()
        else:
            assert response.status_code == 422
            body = response.json()
            assert body["code"] == "return_url_not_allowed"
            assert "after_completion" in body["detail"]


class TestReturnUrlPrecedence:
    async def test_an_explicit_url_is_sent_to_stripe(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        await stripe_app.post(
            "/portal-sessions",
            headers=user_headers("u1"),
            json={"return_url": "https://app.example.com/settings"},
        )
        assert stripe_fake.sessions_sent[0].form["return_url"] == "https://app.example.com/settings"

    async def test_without_a_url_the_configured_default_is_used(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.configuration(
            "bpc_default", is_default=True, default_return_url="https://app.example.com/portal"
        )
        await stripe_app.post("/portal-sessions", headers=user_headers("u1"))
        assert stripe_fake.sessions_sent[0].form["return_url"] == "https://app.example.com/account"

    async def test_without_a_configured_default_the_configurations_default_is_used(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.configuration(
            "bpc_default", is_default=True, default_return_url="https://app.example.com/portal"
        )
        async with stripe_client(portal_default_return_url="") as client:
            response = await client.post("/portal-sessions", headers=user_headers("u1"))
        assert response.status_code == 201
        assert stripe_fake.sessions_sent[0].form["return_url"] == "https://app.example.com/portal"

    async def test_the_chosen_configurations_default_wins_over_the_modes_default(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake, mirror: Mirror
    ) -> None:
        await mirror.customer("cus_1")
        await mirror.configuration(
            "bpc_default", is_default=True, default_return_url="https://app.example.com/portal"
        )
        await mirror.configuration("bpc_pro", default_return_url="https://app.example.com/pro")
        async with stripe_client(portal_default_return_url="") as client:
            await client.post(
                "/portal-sessions",
                headers=backend_headers(),
                json={"customer_id": "cus_1", "configuration": "bpc_pro"},
            )
        assert stripe_fake.sessions_sent[0].form["return_url"] == "https://app.example.com/pro"

    async def test_no_url_anywhere_is_return_url_required(
        self, stripe_client: Callable[..., Any], stripe_fake: StripeFake
    ) -> None:
        async with stripe_client(portal_default_return_url="") as client:
            response = await client.post("/portal-sessions", headers=user_headers("u1"))
        assert response.status_code == 422
        assert response.json()["code"] == "return_url_required"
        assert stripe_fake.sessions_sent == []

    @pytest.mark.sqlite
    def test_a_default_outside_the_allowlist_stops_the_start(
        self, settings_factory: Callable[..., Any]
    ) -> None:
        settings = settings_factory(portal_default_return_url="https://evil.example.com/")
        with pytest.raises(ConfigError, match="PORTAL_DEFAULT_RETURN_URL"):
            settings.check()


@pytest.mark.sqlite
class TestLocaleApi:
    @pytest.mark.parametrize(
        ("locale", "accept_language", "expected"),
        [
            pytest.param("fr", None, "fr", id="explicit"),
            pytest.param("pt-br", None, "pt-BR", id="explicit-canonical-spelling"),
            pytest.param("auto", "de", "auto", id="explicit-auto-wins"),
            pytest.param("ja", "de", "ja", id="explicit-wins-over-header"),
            pytest.param(None, "fr-CH, fr;q=0.9, en;q=0.8", "fr", id="fr-CH"),
            pytest.param(None, "es-MX", "es-419", id="es-MX"),
            pytest.param(None, "pt-PT", "pt", id="pt-PT"),
            pytest.param(None, "zh-Hant-TW", "zh-TW", id="zh-Hant-TW"),
            pytest.param(None, "de;q=0.5, ja;q=0.8", "ja", id="quality-values"),
            pytest.param(None, "xx-YY, tlh", "auto", id="unknown"),
            pytest.param(None, None, "auto", id="no-header"),
        ],
    )
    async def test_locale_sent_and_returned(
        self,
        offline: httpx.AsyncClient,
        locale: str | None,
        accept_language: str | None,
        expected: str,
    ) -> None:
        headers = user_headers("u1")
        if accept_language is not None:
            headers["Accept-Language"] = accept_language
        body = {"locale": locale} if locale is not None else {}
        response = await offline.post("/portal-sessions", headers=headers, json=body)
        assert response.status_code == 201
        assert response.json()["locale"] == expected

    @pytest.mark.parametrize("locale", ["xx", "en-US", "fr_FR", "klingon"])
    async def test_an_unsupported_explicit_locale_is_refused(
        self, offline: httpx.AsyncClient, locale: str
    ) -> None:
        response = await offline.post(
            "/portal-sessions", headers=user_headers("u1"), json={"locale": locale}
        )
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "unsupported_locale"
        assert locale in body["detail"]


class TestLocaleSentToStripe:
    async def test_the_negotiated_locale_is_what_stripe_receives(
        self, stripe_app: httpx.AsyncClient, stripe_fake: StripeFake
    ) -> None:
        await stripe_app.post(
            "/portal-sessions", headers={**user_headers("u1"), "Accept-Language": "es-MX,es;q=0.9"}
        )
        assert stripe_fake.sessions_sent[0].form["locale"] == "es-419"
