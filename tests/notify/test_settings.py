"""NOTIFY_* settings: refused at start-up unless signed, and https-only in production."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from notify.receiver import NOTIFY_SECRET
from portal_service.config import ConfigError


@pytest.mark.sqlite
class TestNotifySettings:
    def test_production_accepts_an_https_url(self, settings_factory: Callable[..., Any]) -> None:
        settings = settings_factory(
            environment="production",
            database_url="postgresql+asyncpg://portal@127.0.0.1:1/portal",
            stripe_api_key="sk_test_123",
            notify_url="https://app.example.com/hooks",
            notify_secret=NOTIFY_SECRET,
        )
        settings.check()

    def test_development_accepts_plain_http_on_loopback(
        self, settings_factory: Callable[..., Any]
    ) -> None:
        settings_factory(notify_url="http://127.0.0.1:9/hooks", notify_secret=NOTIFY_SECRET).check()

    @pytest.mark.parametrize(
        ("url", "secret", "reason"),
        [
            ("https://app.example.com/h", None, "NOTIFY_URL needs NOTIFY_SECRET"),
            ("ftp://app.example.com/h", NOTIFY_SECRET, "absolute http:// or https://"),
            ("/relative", NOTIFY_SECRET, "absolute http:// or https://"),
            ("https://app.example.com/h", "whsec_***", "Standard Webhooks secret"),
            ("https://app.example.com/h", "plain", "Standard Webhooks secret"),
        ],
    )
    def test_unsafe_notify_settings_are_refused(
        self, settings_factory: Callable[..., Any], url: str, secret: str | None, reason: str
    ) -> None:
        with pytest.raises(ConfigError, match=reason):
            settings_factory(notify_url=url, notify_secret=secret).check()

    def test_without_notify_url_nothing_is_required(
        self, settings_factory: Callable[..., Any]
    ) -> None:
        settings = settings_factory()
        settings.check()
        assert (settings.notify_url, settings.notify_coalesce_seconds) == (None, 1)
