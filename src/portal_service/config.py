"""Settings from the environment (and `.env`), and the start-up refusals (README.md, "Configuration")."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import urlsplit

import stripe
from fastapi import Depends, Request
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from portal_service.app_state import app_state

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)\s*$")
_PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600}

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ConfigError(Exception):
    """A setting that makes the service refuse to start; the message is one line."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # `VAR=` (and compose's `${VAR:-}`) means unset, for every setting: the default
        # applies instead of "" failing to parse as a number, a boolean or a choice.
        env_ignore_empty=True,
    )

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./portal.db"
    database_read_url: str | None = None

    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_api_version: str = Field(default=stripe.api_version)
    stripe_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    stripe_webhook_tolerance: int = Field(default=300, ge=1)
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    stripe_timeout: float = Field(default=10.0, gt=0)

    auth_jwt_secret: SecretStr | None = None
    auth_jwks_url: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwt_issuer: str | None = None
    auth_user_claim: str = "sub"

    backend_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    auto_create_customers: bool = True
    portal_default_return_url: str | None = None
    portal_return_url_allowlist: CommaList = Field(default_factory=list)
    portal_config_file: str | None = None

    access_past_due_grace_days: int = Field(default=0, ge=0)
    access_during_paused_collection: bool = False
    accept_other_mode_events: bool = False

    cors_allow_origins: CommaList = Field(default_factory=list)
    rate_limit_portal_sessions: str = "10/minute"
    webhook_max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # Outbound access.changed notifications (README.md, "Being told when access changes"): off without NOTIFY_URL.
    notify_url: str | None = None
    notify_secret: SecretStr | None = None
    notify_coalesce_seconds: float = Field(default=1.0, ge=0, le=3600)
    notify_timeout: float = Field(default=10.0, gt=0, le=120)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator(
        "stripe_webhook_secrets",
        "backend_api_keys",
        "admin_api_keys",
        "portal_return_url_allowlist",
        "cors_allow_origins",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("rate_limit_portal_sessions")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        if not _RATE.match(value):
            raise ValueError("must look like N/second, N/minute or N/hour")
        return value

    @field_validator(
        "stripe_api_key",
        "auth_jwt_secret",
        "auth_jwks_url",
        "portal_default_return_url",
        "stripe_api_base",
        "database_read_url",
        "portal_config_file",
        "auth_jwt_audience",
        "auth_jwt_issuer",
        "notify_url",
        "notify_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("stripe_api_version", mode="before")
    @classmethod
    def _empty_is_sdk_version(cls, value: object) -> object:
        # An empty variable (compose's `${STRIPE_API_VERSION:-}`) means unset, never "".
        return stripe.api_version if isinstance(value, str) and not value.strip() else value

    @property
    def offline(self) -> bool:
        """No Stripe key: the local gateway stands in for Stripe (section 9)."""
        return self.stripe_api_key is None

    @property
    def livemode(self) -> bool:
        """The mode every read and flow check sees: live only for live keys."""
        if self.stripe_api_key is None:
            return False
        return self.stripe_api_key.get_secret_value().startswith(("sk_live_", "rk_live_"))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def rate_limit(self) -> tuple[int, int]:
        """(requests, window seconds) of RATE_LIMIT_PORTAL_SESSIONS."""
        match = _RATE.match(self.rate_limit_portal_sessions)
        assert match is not None  # noqa: S101 - checked by the validator
        return int(match.group(1)), _PERIOD_SECONDS[match.group(2)]

    def check(self, *, workers: int = 1) -> None:
        """Raise ConfigError with a one-line reason if the service must not start."""
        if self.auth_jwt_secret is not None and self.auth_jwks_url is not None:
            raise ConfigError("set AUTH_JWT_SECRET or AUTH_JWKS_URL, not both")
        if self.auth_jwks_url is not None and not (self.auth_jwt_audience and self.auth_jwt_issuer):
            raise ConfigError("AUTH_JWKS_URL needs AUTH_JWT_AUDIENCE and AUTH_JWT_ISSUER")
        if workers > 1 and self.is_sqlite:
            raise ConfigError("SQLite is single-process: --workers above 1 needs PostgreSQL")
        # The checks of packages above this one (portal/: the allowlist, PORTAL_CONFIG_FILE).
        for package_check in STARTUP_CHECKS:
            package_check(self)
        self._check_notify()
        if self.environment != "production":
            return
        if self.is_sqlite:
            raise ConfigError("production needs PostgreSQL: DATABASE_URL is SQLite")
        if not self.stripe_webhook_secrets:
            raise ConfigError("production needs STRIPE_WEBHOOK_SECRETS")
        has_user_auth = self.auth_jwt_secret is not None or self.auth_jwks_url is not None
        if not (has_user_auth or self.backend_api_keys or self.admin_api_keys):
            raise ConfigError(
                "production needs AUTH_JWT_SECRET, AUTH_JWKS_URL or API keys: nothing would be authenticated"
            )
        if self.offline:
            raise ConfigError("production needs STRIPE_API_KEY: offline mode is for development")
        if self.notify_url is not None and not self.notify_url.lower().startswith("https://"):
            raise ConfigError("production needs an https:// NOTIFY_URL")

    def _check_notify(self) -> None:
        if self.notify_url is None:
            return
        if self.notify_secret is None:
            raise ConfigError("NOTIFY_URL needs NOTIFY_SECRET: notifications are always signed")
        parsed = urlsplit(self.notify_url)
        if parsed.scheme.lower() not in ("http", "https") or not parsed.hostname:
            raise ConfigError("NOTIFY_URL must be an absolute http:// or https:// URL")
        secret = self.notify_secret.get_secret_value()
        try:
            # What the signing library itself accepts, behind the Standard Webhooks prefix.
            valid = secret.startswith("whsec_") and Webhook(secret) is not None
        except (ValueError, EmptyWebhookSecretError):
            valid = False
        if not valid:
            raise ConfigError("NOTIFY_SECRET must be a Standard Webhooks secret: whsec_<base64>")


StartupCheck = Callable[[Settings], None]
"""Raises ConfigError when the settings a package reads must stop the start."""

STARTUP_CHECKS: list[StartupCheck] = []
"""The checks of the packages that own settings beyond plain values (portal/ registers the
return URL allowlist and PORTAL_CONFIG_FILE on import): config.py imports no package above
it, the packages add what only they can validate (ARCHITECTURE.md, "Rules of dependency")."""


def register_startup_check(check: StartupCheck) -> StartupCheck:
    if check not in STARTUP_CHECKS:
        STARTUP_CHECKS.append(check)
    return check


@lru_cache
def get_settings() -> Settings:
    return Settings()


async def _app_settings(request: Request) -> Settings:
    # async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread
    # hop on every request for a dictionary lookup.
    return app_state(request).settings


AppSettings = Annotated[Settings, Depends(_app_settings)]
"""The settings the running app was built with (tests build apps with their own)."""
