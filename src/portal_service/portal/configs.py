"""The portal configuration file (PORTAL_CONFIG_FILE, README.md, "Portal configuration file"): named
configurations with their `bpc_` id per mode, and the rules choosing one per customer.

POST /portal-sessions only reads it (selection); `portal-service portal-config` writes
Stripe from it. Example:

    [configurations.basic]
    default_return_url = "https://app.example.com/account"
    ids = { test = "bpc_test_basic", live = "bpc_live_basic" }
    name = "Basic plan"            # Stripe's `name`: found by it when a mode has no id yet
    metadata = { team = "billing" }
    login_page = { enabled = true }
    on_behalf_of = "acct_123"      # Connect: sessions with it act for this account
    [configurations.basic.features.subscription_update]
    enabled = true
    billing_cycle_anchor = "unchanged"
    trial_update_behavior = "continue_trial"
    schedule_at_period_end = { conditions = [{ type = "decreasing_item_amount" }] }
    [[configurations.basic.features.subscription_update.products]]
    product = "prod_basic"
    prices = ["price_basic_m"]
    adjustable_quantity = { enabled = true, maximum = 10 }
    [configurations.basic.features.subscription_cancel]
    enabled = true
    mode = "at_period_end"

    [[rules]]                      # first match wins; no match: Stripe's default
    configuration = "basic"
    products = ["prod_basic"]      # the customer has access to one of these now
    metadata = { tier = "gold" }   # and every pair equals the customer's metadata
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends, Request
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from portal_service.app_state import app_state

if TYPE_CHECKING:
    # Only a type: config.py loads this module to check the file at start-up.
    pass


def _not_an_id(name: str) -> str:
    # A name that looks like an id would make `configuration` in requests ambiguous.
    if name.startswith("bpc_"):
        raise ValueError("a configuration name cannot start with bpc_")
    return name


ConfigName = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"), AfterValidator(_not_an_id)
]
CONFIGURATION_ID_PATTERN = r"^bpc_[A-Za-z0-9_]+$"
ConfigurationId = Annotated[str, Field(pattern=CONFIGURATION_ID_PATTERN, max_length=255)]
ACCOUNT_ID_PATTERN = r"^acct_[A-Za-z0-9]+$"
AccountId = Annotated[str, Field(pattern=ACCOUNT_ID_PATTERN, max_length=255)]


class PortalConfigError(ValueError):
    """The file cannot be used; the message is one line naming the problem."""


class _Model(BaseModel):
    # A misspelt key in an ops-owned file must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModeIds(_Model):
    test: ConfigurationId | None = None
    live: ConfigurationId | None = None


class BusinessProfile(_Model):
    headline: str | None = None
    privacy_policy_url: str | None = None
    terms_of_service_url: str | None = None


class CustomerUpdateFeature(_Model):
    enabled: bool = False
    allowed_updates: list[Literal["address", "email", "name", "phone", "shipping", "tax_id"]] = (
        Field(default_factory=list)
    )


class EnabledFeature(_Model):
    enabled: bool = False


class PaymentMethodUpdateFeature(_Model):
    enabled: bool = False
    payment_method_configuration: str | None = None


class CancellationReason(_Model):
    enabled: bool = False
    options: list[
        Literal[
            "customer_service",
            "low_quality",
            "missing_features",
            "other",
            "switched_service",
            "too_complex",
            "too_expensive",
            "unused",
        ]
    ] = Field(default_factory=list)


class SubscriptionCancelFeature(_Model):
    enabled: bool = False
    mode: Literal["at_period_end", "immediately"] | None = None
    proration_behavior: Literal["always_invoice", "create_prorations", "none"] | None = None
    cancellation_reason: CancellationReason | None = None


class AdjustableQuantity(_Model):
    enabled: bool = False
    minimum: int | None = Field(default=None, ge=0)
    maximum: int | None = Field(default=None, ge=1)


class UpdatableProduct(_Model):
    product: str = Field(min_length=1)
    prices: list[str] = Field(min_length=1)
    adjustable_quantity: AdjustableQuantity | None = None


class ScheduleCondition(_Model):
    type: Literal["decreasing_item_amount", "shortening_interval"]


class ScheduleAtPeriodEnd(_Model):
    # Changes meeting any condition wait for the end of the period.
    conditions: list[ScheduleCondition] = Field(default_factory=list)


class SubscriptionUpdateFeature(_Model):
    enabled: bool = False
    default_allowed_updates: list[Literal["price", "promotion_code", "quantity"]] = Field(
        default_factory=list
    )
    # Stripe offers at most 10 products for switching.
    products: list[UpdatableProduct] = Field(default_factory=list, max_length=10)
    proration_behavior: Literal["always_invoice", "create_prorations", "none"] | None = None
    trial_update_behavior: Literal["continue_trial", "end_trial"] | None = None
    billing_cycle_anchor: Literal["now", "unchanged"] | None = None
    schedule_at_period_end: ScheduleAtPeriodEnd | None = None


class SubscriptionPauseFeature(_Model):
    enabled: bool = False


class Features(_Model):
    customer_update: CustomerUpdateFeature | None = None
    invoice_history: EnabledFeature | None = None
    payment_method_update: PaymentMethodUpdateFeature | None = None
    subscription_cancel: SubscriptionCancelFeature | None = None
    subscription_update: SubscriptionUpdateFeature | None = None
    subscription_pause: SubscriptionPauseFeature | None = None


class LoginPage(_Model):
    enabled: bool = False


class NamedConfiguration(_Model):
    ids: ModeIds = Field(default_factory=ModeIds)
    # Stripe's own `name` of the configuration: `portal-config` finds an existing one by it
    # when the file has no id for the mode yet.
    name: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: dict[str, str] | None = None
    default_return_url: str | None = None
    business_profile: BusinessProfile | None = None
    login_page: LoginPage | None = None
    features: Features = Field(default_factory=Features)
    # Not a configuration field: sessions created with this configuration pass it to Stripe.
    on_behalf_of: AccountId | None = None

    def id_for(self, *, livemode: bool) -> str | None:
        return self.ids.live if livemode else self.ids.test


class Rule(_Model):
    configuration: ConfigName
    products: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)

    def matches(self, *, active_products: Set[str], metadata: Mapping[str, str]) -> bool:
        # A rule without conditions matches everyone: a file-wide fallback.
        if self.products and active_products.isdisjoint(self.products):
            return False
        return all(metadata.get(key) == value for key, value in self.metadata.items())


@dataclass(frozen=True, slots=True)
class Selected:
    name: str | None
    # None: the file names this configuration but has no id for the mode yet
    # (`portal-service portal-config apply` has not run for it).
    configuration_id: str | None


class PortalConfigFile(_Model):
    configurations: dict[ConfigName, NamedConfiguration] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_name_configurations(self) -> PortalConfigFile:
        for index, rule in enumerate(self.rules):
            if rule.configuration not in self.configurations:
                raise ValueError(
                    f"rules[{index}] names configuration {rule.configuration!r}, "
                    "which is not declared under [configurations]"
                )
        return self

    def declared_ids(self, *, livemode: bool) -> dict[str, str]:
        """`bpc_` id → configuration name, for one mode."""
        out: dict[str, str] = {}
        for name, configuration in self.configurations.items():
            ident = configuration.id_for(livemode=livemode)
            if ident is not None:
                out[ident] = name
        return out

    def lookup(self, value: str, *, livemode: bool) -> Selected | None:
        """A name or a declared `bpc_` id of this mode; None if the file does not list it."""
        configuration = self.configurations.get(value)
        if configuration is not None:
            return Selected(name=value, configuration_id=configuration.id_for(livemode=livemode))
        name = self.declared_ids(livemode=livemode).get(value)
        return Selected(name=name, configuration_id=value) if name is not None else None

    def select(
        self, *, livemode: bool, active_products: Set[str], metadata: Mapping[str, str]
    ) -> Selected | None:
        """The first rule matching the customer whose configuration has an id in this mode."""
        for rule in self.rules:
            if not rule.matches(active_products=active_products, metadata=metadata):
                continue
            ident = self.configurations[rule.configuration].id_for(livemode=livemode)
            # Not applied to this mode yet: the next rule (or Stripe's default) applies.
            if ident is not None:
                return Selected(name=rule.configuration, configuration_id=ident)
        return None


def load_portal_config(path: str | Path) -> PortalConfigFile:
    """Read and validate the file; PortalConfigError (one line) if it cannot be used."""
    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise PortalConfigError(f"PORTAL_CONFIG_FILE {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PortalConfigError(f"PORTAL_CONFIG_FILE {path}: invalid TOML: {exc}") from exc
    try:
        return PortalConfigFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "file"
        raise PortalConfigError(f"PORTAL_CONFIG_FILE {path}: {where}: {first['msg']}") from exc


async def _app_portal_config(request: Request) -> PortalConfigFile | None:
    # Parsed once in the app's lifespan (main.py): no file I/O on a request.
    return app_state(request).portal_config


PortalConfigDep = Annotated[PortalConfigFile | None, Depends(_app_portal_config)]
"""The app's parsed PORTAL_CONFIG_FILE, or None when it is not set."""
