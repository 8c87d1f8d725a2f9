"""Settings from the environment and `.env` (README.md, "Configuration"), and the start-up refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from portal_service.config import ConfigError, Settings

PG_URL = "postgresql+asyncpg://portal@db.internal:5432/portal"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the shell running the suite exports must not leak into these settings."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def from_env(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def production(**overrides: Any) -> Settings:
    """A production configuration that starts; each refusal test breaks exactly one thing."""
    values: dict[str, Any] = {
        "environment": "production",
        "database_url": PG_URL,
        "stripe_api_key": "sk_live_123",
        "stripe_webhook_secrets": "whsec_one",
        "auth_jwt_secret": "a-long-enough-shared-secret-for-hs256",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.sqlite
class TestCommaSeparatedSettings:
    def test_comma_lists_split_and_drop_blanks(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = from_env(
            monkeypatch,
            BACKEND_API_KEYS=" key-a, key-b,,key-c ",
            PORTAL_RETURN_URL_ALLOWLIST="https://app.example.com,myapp://billing",
            CORS_ALLOW_ORIGINS="https://app.example.com",
        )
        assert [k.get_secret_value() for k in settings.backend_api_keys] == [
            "key-a",
            "key-b",
            "key-c",
        ]
        assert settings.portal_return_url_allowlist == [
            "https://app.example.com",
            "myapp://billing",
        ]
        assert settings.cors_allow_origins == ["https://app.example.com"]

    def test_webhook_secrets_are_plain_commas_not_json(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # pydantic-settings would try JSON for a list; NoDecode keeps `a,b` working.
        settings = from_env(monkeypatch, STRIPE_WEBHOOK_SECRETS="whsec_old,whsec_new")
        assert [s.get_secret_value() for s in settings.stripe_webhook_secrets] == [
            "whsec_old",
            "whsec_new",
        ]

    def test_unset_and_empty_lists_are_empty(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = from_env(monkeypatch, ADMIN_API_KEYS="")
        assert settings.admin_api_keys == []
        assert settings.stripe_webhook_secrets == []
        assert settings.cors_allow_origins == []

    def test_secret_lists_do_not_print_their_values(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = from_env(monkeypatch, ADMIN_API_KEYS="admin-key-value")
        assert "admin-key-value" not in repr(settings)


@pytest.mark.sqlite
class TestRateLimitSetting:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("5/second", (5, 1)),
            ("10/minute", (10, 60)),
            (" 100 / hour ", (100, 3600)),
        ],
    )
    def test_rate_parses_into_count_and_window(
        self, monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[int, int]
    ) -> None:
        settings = from_env(monkeypatch, RATE_LIMIT_PORTAL_SESSIONS=value)
        assert settings.rate_limit == expected

    def test_default_is_ten_a_minute(self) -> None:
        assert Settings(_env_file=None).rate_limit == (10, 60)  # type: ignore[call-arg]

    @pytest.mark.parametrize(
        "value", ["5/day", "five/minute", "5/minutes", "5", "/minute", "-1/hour"]
    )
    def test_malformed_rate_is_refused(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        with pytest.raises(ValidationError, match="rate_limit_portal_sessions"):
            from_env(monkeypatch, RATE_LIMIT_PORTAL_SESSIONS=value)


@pytest.mark.sqlite
class TestStripeModeSettings:
    @pytest.mark.parametrize(
        ("key", "livemode"),
        [
            ("sk_live_abc", True),
            ("rk_live_abc", True),
            ("sk_test_abc", False),
            ("rk_test_abc", False),
        ],
    )
    def test_livemode_follows_the_key_prefix(
        self, monkeypatch: pytest.MonkeyPatch, key: str, livemode: bool
    ) -> None:
        settings = from_env(monkeypatch, STRIPE_API_KEY=key)
        assert settings.livemode is livemode
        assert settings.offline is False

    def test_no_key_is_offline_test_mode(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = from_env(monkeypatch)
        assert settings.offline is True
        assert settings.livemode is False

    def test_empty_key_counts_as_no_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Compose passes `${STRIPE_API_KEY:-}`: an empty variable must mean offline, not a key "".
        settings = from_env(monkeypatch, STRIPE_API_KEY="  ")
        assert settings.offline is True

    def test_empty_variables_mean_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # docker-compose.yml passes `${VAR:-}`: an empty value must behave like no value.
        import stripe

        settings = from_env(
            monkeypatch,
            STRIPE_API_VERSION="",
            STRIPE_API_BASE="",
            AUTH_JWT_SECRET="",
            AUTH_JWKS_URL="",
            AUTH_JWT_AUDIENCE="",
            AUTH_JWT_ISSUER="",
            PORTAL_DEFAULT_RETURN_URL="",
            DATABASE_READ_URL="",
        )
        assert settings.stripe_api_version == stripe.api_version
        assert settings.stripe_api_base is None
        assert settings.auth_jwt_secret is None
        assert settings.auth_jwks_url is None
        assert settings.auth_jwt_audience is None
        assert settings.auth_jwt_issuer is None
        assert settings.portal_default_return_url is None
        assert settings.database_read_url is None
        settings.check()

    def test_every_empty_variable_means_its_default(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        # README: "an empty variable means unset", for numbers, booleans and choices too
        # (docker-compose.yml passes every setting as `${VAR:-}`).
        defaults = from_env(monkeypatch)
        for name in Settings.model_fields:
            monkeypatch.setenv(name.upper(), "")
        assert Settings(_env_file=None) == defaults  # type: ignore[call-arg]
        env_file = tmp_path / ".env"
        env_file.write_text("".join(f"{name.upper()}=\n" for name in Settings.model_fields))
        for name in Settings.model_fields:
            monkeypatch.delenv(name.upper())
        assert Settings(_env_file=env_file) == defaults  # type: ignore[call-arg]

    def test_api_version_defaults_to_the_sdk_pin(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import stripe

        assert from_env(monkeypatch).stripe_api_version == stripe.api_version
        pinned = from_env(monkeypatch, STRIPE_API_VERSION="2025-03-31.basil")
        assert pinned.stripe_api_version == "2025-03-31.basil"


@pytest.mark.sqlite
class TestSettingsDefaults:
    def test_defaults_are_those_of_the_design(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = from_env(monkeypatch)
        assert settings.environment == "development"
        assert settings.database_url == "sqlite+aiosqlite:///./portal.db"
        assert settings.database_read_url is None
        assert settings.stripe_webhook_tolerance == 300
        assert settings.stripe_max_network_retries == 2
        assert settings.stripe_timeout == 10
        assert settings.auth_user_claim == "sub"
        assert settings.auto_create_customers is True
        assert settings.access_past_due_grace_days == 0
        assert settings.access_during_paused_collection is False
        assert settings.accept_other_mode_events is False
        assert settings.webhook_max_body_bytes == 1_048_576
        assert (settings.log_level, settings.log_format) == ("INFO", "json")

    def test_log_level_is_case_insensitive(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert from_env(monkeypatch, LOG_LEVEL="debug").log_level == "DEBUG"

    def test_unknown_environment_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with pytest.raises(ValidationError, match="environment"):
            from_env(monkeypatch, ENVIRONMENT="staging")


@pytest.mark.sqlite
class TestDotEnvFile:
    def test_dotenv_file_is_read(self, tmp_path: Path) -> None:
        env_file = tmp_path / ".env"
        env_file.write_text("LOG_FORMAT=console\nBACKEND_API_KEYS=one,two\n")
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
        assert settings.log_format == "console"
        assert len(settings.backend_api_keys) == 2

    def test_environment_wins_over_dotenv(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        env_file = tmp_path / ".env"
        env_file.write_text("LOG_FORMAT=console\n")
        monkeypatch.setenv("LOG_FORMAT", "json")
        assert Settings(_env_file=env_file).log_format == "json"  # type: ignore[call-arg]

    def test_env_example_documents_every_setting(self) -> None:
        example = Path(__file__).resolve().parents[2] / ".env.example"
        documented = {
            line.lstrip("# ").split("=", 1)[0]
            for line in example.read_text().splitlines()
            if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
        }
        assert {name.upper() for name in Settings.model_fields} <= documented

    def test_compose_passes_every_setting_to_both_services(self) -> None:
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        passed = compose["x-portal-environment"]
        assert {name.upper() for name in Settings.model_fields} <= set(passed)
        for service in ("migrate", "api"):
            assert compose["services"][service]["environment"] == passed

    def test_env_example_as_is_starts_in_development(self) -> None:
        example = Path(__file__).resolve().parents[2] / ".env.example"
        settings = Settings(_env_file=example)  # type: ignore[call-arg]
        settings.check()
        assert settings.environment == "development"
        assert settings.offline is True


@pytest.mark.sqlite
class TestSettingsCheck:
    def test_complete_production_configuration_starts(self) -> None:
        production().check(workers=4)

    def test_production_with_api_keys_only_starts(self) -> None:
        production(auth_jwt_secret=None, backend_api_keys="backend-key").check()

    def test_development_needs_nothing(self) -> None:
        Settings(_env_file=None).check()  # type: ignore[call-arg]

    @pytest.mark.parametrize(
        ("overrides", "reason"),
        [
            ({"database_url": "sqlite+aiosqlite:///./portal.db"}, "production needs PostgreSQL"),
            ({"stripe_webhook_secrets": ""}, "production needs STRIPE_WEBHOOK_SECRETS"),
            ({"auth_jwt_secret": None}, "nothing would be authenticated"),
            ({"stripe_api_key": None}, "offline mode is for development"),
        ],
        ids=["sqlite", "no-webhook-secrets", "no-auth", "offline"],
    )
    def test_production_refusals(self, overrides: dict[str, Any], reason: str) -> None:
        with pytest.raises(ConfigError, match=reason) as caught:
            production(**overrides).check()
        assert "\n" not in str(caught.value)

    @pytest.mark.parametrize("environment", ["development", "test", "production"])
    def test_both_jwt_secret_and_jwks_are_refused_everywhere(self, environment: str) -> None:
        settings = production(
            environment=environment,
            auth_jwks_url="https://idp.example.com/.well-known/jwks.json",
            auth_jwt_audience="app",
            auth_jwt_issuer="https://idp.example.com/",
        )
        with pytest.raises(ConfigError, match="not both"):
            settings.check()

    def test_jwks_without_audience_and_issuer_is_refused(self) -> None:
        settings = production(
            auth_jwt_secret=None, auth_jwks_url="https://idp.example.com/.well-known/jwks.json"
        )
        with pytest.raises(ConfigError, match="AUTH_JWT_AUDIENCE and AUTH_JWT_ISSUER"):
            settings.check()

    def test_jwks_with_audience_and_issuer_starts(self) -> None:
        production(
            auth_jwt_secret=None,
            auth_jwks_url="https://idp.example.com/.well-known/jwks.json",
            auth_jwt_audience="app",
            auth_jwt_issuer="https://idp.example.com/",
        ).check()

    def test_several_workers_on_sqlite_are_refused(self) -> None:
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        settings.check(workers=1)
        with pytest.raises(ConfigError, match="single-process"):
            settings.check(workers=2)

    def test_default_return_url_outside_the_allowlist_is_refused(self) -> None:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            portal_return_url_allowlist="https://app.example.com/billing",
            portal_default_return_url="https://app.example.com/billingx",
        )
        with pytest.raises(ConfigError, match="PORTAL_DEFAULT_RETURN_URL"):
            settings.check()

    def test_default_return_url_without_any_allowlist_is_refused(self) -> None:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, portal_default_return_url="https://app.example.com/account"
        )
        with pytest.raises(ConfigError, match="PORTAL_DEFAULT_RETURN_URL"):
            settings.check()

    def test_default_return_url_inside_the_allowlist_starts(self) -> None:
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            portal_return_url_allowlist="https://app.example.com/billing",
            portal_default_return_url="https://app.example.com/billing/done",
        ).check()

    def test_malformed_allowlist_entry_is_refused_even_without_a_default(self) -> None:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, portal_return_url_allowlist="https://app.example.com,https://u@evil.com"
        )
        with pytest.raises(ConfigError, match="PORTAL_RETURN_URL_ALLOWLIST") as caught:
            settings.check()
        assert "\n" not in str(caught.value)
