"""Portal configurations as code, the fields added after the first release: Stripe's `name`
(an existing configuration is found by it), `metadata`, `login_page.enabled`, the newer
subscription_update fields, and `on_behalf_of` (for sessions, never sent as a field)."""

from __future__ import annotations

import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portal.test_config_sync import ConfigurationsFake, configuration_object
from portal_service.config import Settings
from portal_service.db import create_sessionmaker
from portal_service.gateway.stripe import StripeGateway
from portal_service.portal import configs
from portal_service.portal.config_diff import compare
from portal_service.portal.config_sync import (
    ConfigSyncError,
    apply_file,
    plan_configurations,
)
from portal_service.portal.configs import PortalConfigError, PortalConfigFile, load_portal_config

STRIPE_API = "https://api.stripe.com"

CONFIG = """\
[configurations.pro]
name = "Pro plan"
metadata = { team = "billing" }
login_page = { enabled = true }
on_behalf_of = "acct_1Pro"

[configurations.pro.features.subscription_update]
enabled = true
default_allowed_updates = ["price", "quantity"]
billing_cycle_anchor = "unchanged"
trial_update_behavior = "continue_trial"
schedule_at_period_end = { conditions = [
  { type = "decreasing_item_amount" }, { type = "shortening_interval" },
] }

[[configurations.pro.features.subscription_update.products]]
product = "prod_pro"
prices = ["price_pro_m"]
adjustable_quantity = { enabled = true, minimum = 1, maximum = 5 }
"""


@pytest.fixture
def stripe_configs(stripe_fake: Any) -> ConfigurationsFake:
    fake = ConfigurationsFake(stripe_fake)
    fake.product("prod_pro", "price_pro_m")

    def listing(request: httpx.Request) -> httpx.Response:
        fake.stripe._record(request)
        data = list(fake.configurations.values())
        body = {"object": "list", "data": data, "has_more": False, "url": request.url.path}
        return httpx.Response(200, json=body, headers={"Request-Id": "req_list"})

    base = f"{STRIPE_API}/v1/billing_portal/configurations"
    stripe_fake.router.get(url__regex=rf"^{base}(\?.*)?$").mock(side_effect=listing)
    return fake


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "portal.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(stripe_api_key="sk_test_123", stripe_max_network_retries=0)


async def apply(settings: Settings, engine: AsyncEngine, path: Path) -> Any:
    gateway = StripeGateway(settings)
    try:
        return await apply_file(
            gateway, create_sessionmaker(engine), path, load_portal_config(path), livemode=False
        )
    finally:
        await gateway.aclose()


class TestFileFields:
    def test_the_documented_example_parses(self) -> None:
        example = textwrap.dedent(str(configs.__doc__).split("Example:", 1)[1])
        parsed = PortalConfigFile.model_validate(tomllib.loads(example))
        basic = parsed.configurations["basic"]
        assert (basic.name, basic.on_behalf_of) == ("Basic plan", "acct_123")
        update = basic.features.subscription_update
        assert update is not None
        assert update.schedule_at_period_end is not None

    def test_on_behalf_of_must_be_an_account_id(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.toml"
        path.write_text('[configurations.x]\non_behalf_of = "cus_1"\n')
        with pytest.raises(PortalConfigError, match="on_behalf_of"):
            load_portal_config(path)

    def test_new_fields_are_compared(self, config_path: Path) -> None:
        declared = load_portal_config(config_path).configurations["pro"]
        stripe_side = configuration_object(
            "bpc_1",
            name="Pro plan",
            metadata={"team": "sales", "other": "kept"},
            login_page={"enabled": False, "url": None},
            features={
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["quantity", "price"],
                    "billing_cycle_anchor": "now",
                    "trial_update_behavior": "continue_trial",
                    # Another order than the file's: not a difference.
                    "schedule_at_period_end": {
                        "conditions": [
                            {"type": "shortening_interval"},
                            {"type": "decreasing_item_amount"},
                        ]
                    },
                    "products": [
                        {
                            "product": "prod_pro",
                            "prices": ["price_pro_m"],
                            "adjustable_quantity": {"enabled": True, "minimum": 1, "maximum": 9},
                        }
                    ],
                }
            },
        )
        paths = [d.path for d in compare(declared, stripe_side)]
        assert paths == [
            "features.subscription_update.billing_cycle_anchor",
            "features.subscription_update.products[prod_pro].adjustable_quantity.maximum",
            "login_page.enabled",
            "metadata.team",
        ]


class TestApplyNewFields:
    async def test_create_sends_the_new_fields_and_not_on_behalf_of(
        self,
        stripe_configs: ConfigurationsFake,
        settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
    ) -> None:
        applied = await apply(settings, engine, config_path)
        [create] = stripe_configs.writes
        form = create.form
        assert form["name"] == "Pro plan"
        assert form["metadata[team]"] == "billing"
        assert form["login_page[enabled]"] == "true"
        update = "features[subscription_update]"
        assert form[f"{update}[billing_cycle_anchor]"] == "unchanged"
        assert form[f"{update}[trial_update_behavior]"] == "continue_trial"
        assert form[f"{update}[schedule_at_period_end][conditions][0][type]"] == (
            "decreasing_item_amount"
        )
        assert form[f"{update}[products][0][adjustable_quantity][maximum]"] == "5"
        assert not any("on_behalf_of" in key for key in form)
        assert applied.recorded == {"pro": "bpc_fake1"}

    async def test_an_existing_configuration_is_found_by_its_name(
        self,
        stripe_configs: ConfigurationsFake,
        settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
    ) -> None:
        stripe_configs.configurations["bpc_other"] = configuration_object("bpc_other", name="Basic")
        stripe_configs.configurations["bpc_named"] = configuration_object(
            "bpc_named", name="Pro plan"
        )
        applied = await apply(settings, engine, config_path)
        [update] = stripe_configs.writes
        assert update.path == "/v1/billing_portal/configurations/bpc_named"
        assert applied.recorded == {"pro": "bpc_named"}
        assert load_portal_config(config_path).configurations["pro"].ids.test == "bpc_named"
        # The fake stores form values as strings; Stripe answers integers.
        product = stripe_configs.configurations["bpc_named"]["features"]["subscription_update"][
            "products"
        ][0]
        product["adjustable_quantity"] = {"enabled": True, "minimum": 1, "maximum": 5}
        # The next run reads it by id and finds nothing to change.
        gateway = StripeGateway(settings)
        try:
            plans = await plan_configurations(
                gateway, load_portal_config(config_path), livemode=False
            )
        finally:
            await gateway.aclose()
        assert [d.path for p in plans for d in p.differences] == []
        assert [(p.configuration_id, p.changed, p.adopted) for p in plans] == [
            ("bpc_named", False, False)
        ]

    async def test_two_configurations_of_that_name_are_an_error(
        self,
        stripe_configs: ConfigurationsFake,
        settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
    ) -> None:
        for configuration_id in ("bpc_a", "bpc_b"):
            stripe_configs.configurations[configuration_id] = configuration_object(
                configuration_id, name="Pro plan"
            )
        with pytest.raises(ConfigSyncError, match="several Stripe configurations"):
            await apply(settings, engine, config_path)
        assert stripe_configs.writes == []
