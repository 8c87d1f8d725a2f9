"""The portal configuration file: loading, validation and choosing a configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from portal_service.config import ConfigError
from portal_service.portal.configs import (
    PortalConfigError,
    PortalConfigFile,
    Selected,
    load_portal_config,
)
from portal_service.portal.startup import portal_config

FULL = """
[configurations.basic]
default_return_url = "https://app.example.com/account"
ids = { test = "bpc_test_basic", live = "bpc_live_basic" }

[configurations.basic.business_profile]
headline = "Example billing"
privacy_policy_url = "https://example.com/privacy"

[configurations.basic.features.customer_update]
enabled = true
allowed_updates = ["email", "address", "tax_id"]

[configurations.basic.features.invoice_history]
enabled = true

[configurations.basic.features.payment_method_update]
enabled = true

[configurations.basic.features.subscription_cancel]
enabled = true
mode = "at_period_end"
proration_behavior = "none"
cancellation_reason = { enabled = true, options = ["too_expensive", "other"] }

[configurations.basic.features.subscription_update]
enabled = true
default_allowed_updates = ["price", "quantity"]
proration_behavior = "create_prorations"
products = [{ product = "prod_basic", prices = ["price_basic_m", "price_basic_y"] }]

[configurations.basic.features.subscription_pause]
enabled = false

[configurations.pro]
ids = { test = "bpc_test_pro" }

[[rules]]
configuration = "pro"
products = ["prod_pro"]

[[rules]]
configuration = "basic"
metadata = { tier = "basic", region = "eu" }

[[rules]]
configuration = "basic"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "portal.toml"
    path.write_text(text)
    return path


@pytest.mark.sqlite
class TestLoadPortalConfig:
    def test_loads_configurations_features_and_rules(self, tmp_path: Path) -> None:
        config = load_portal_config(write(tmp_path, FULL))
        basic = config.configurations["basic"]
        assert basic.id_for(livemode=False) == "bpc_test_basic"
        assert basic.id_for(livemode=True) == "bpc_live_basic"
        assert basic.features.subscription_update is not None
        assert basic.features.subscription_update.products[0].prices == [
            "price_basic_m",
            "price_basic_y",
        ]
        assert basic.features.subscription_cancel is not None
        assert basic.features.subscription_cancel.mode == "at_period_end"
        assert [rule.configuration for rule in config.rules] == ["pro", "basic", "basic"]

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param("[configurations.basic\n", "invalid TOML", id="toml-syntax"),
            pytest.param(
                "[configurations.basic]\nidz = {}\n", "configurations.basic.idz", id="unknown-key"
            ),
            pytest.param(
                '[[rules]]\nconfiguration = "ghost"\n', "not declared", id="rule-names-nothing"
            ),
            pytest.param(
                "[configurations.bpc_x]\n", "cannot start with bpc_", id="name-looks-like-an-id"
            ),
            pytest.param(
                '[configurations.basic]\nids = { test = "cfg_1" }\n',
                "configurations.basic.ids.test",
                id="id-not-bpc",
            ),
            pytest.param(
                '[configurations.basic.features.subscription_cancel]\nmode = "someday"\n',
                "mode",
                id="bad-enum",
            ),
        ],
    )
    def test_an_unusable_file_is_refused_in_one_line(
        self, tmp_path: Path, text: str, message: str
    ) -> None:
        with pytest.raises(PortalConfigError) as raised:
            load_portal_config(write(tmp_path, text))
        assert message in str(raised.value)
        assert "\n" not in str(raised.value)

    def test_a_missing_file_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(PortalConfigError, match="PORTAL_CONFIG_FILE"):
            load_portal_config(tmp_path / "nope.toml")

    def test_settings_check_refuses_to_start_with_a_bad_file(
        self, tmp_path: Path, settings_factory: Callable[..., Any]
    ) -> None:
        settings = settings_factory(portal_config_file=str(write(tmp_path, "rules = 3\n")))
        with pytest.raises(ConfigError, match="PORTAL_CONFIG_FILE"):
            settings.check()

    def test_the_file_is_read_once_for_the_settings_that_name_it(
        self, tmp_path: Path, settings_factory: Callable[..., Any]
    ) -> None:
        path = write(tmp_path, FULL)
        settings = settings_factory(portal_config_file=str(path))
        settings.check()
        parsed = portal_config(settings)
        assert parsed is not None
        assert parsed.configurations
        path.unlink()
        # Checked again (create_app after the CLI's own check): the parse is reused.
        settings.check()
        assert portal_config(settings) is parsed
        # Other settings naming the same path read the file themselves.
        with pytest.raises(ConfigError, match="PORTAL_CONFIG_FILE"):
            settings_factory(portal_config_file=str(path)).check()


@pytest.mark.sqlite
class TestPortalConfigSelection:
    @pytest.fixture
    def config(self, tmp_path: Path) -> PortalConfigFile:
        return load_portal_config(write(tmp_path, FULL))

    def test_lookup_by_name_and_by_declared_id(self, config: PortalConfigFile) -> None:
        assert config.lookup("pro", livemode=False) == Selected("pro", "bpc_test_pro")
        assert config.lookup("bpc_live_basic", livemode=True) == Selected("basic", "bpc_live_basic")
        assert config.lookup("bpc_live_basic", livemode=False) is None
        assert config.lookup("pro", livemode=True) == Selected("pro", None)
        assert config.lookup("gold", livemode=False) is None

    @pytest.mark.parametrize(
        ("products", "metadata", "livemode", "expected"),
        [
            pytest.param({"prod_pro"}, {}, False, "bpc_test_pro", id="product"),
            pytest.param({"prod_pro"}, {}, True, "bpc_live_basic", id="no-live-id-falls-through"),
            pytest.param(
                set(), {"tier": "basic", "region": "eu"}, False, "bpc_test_basic", id="metadata"
            ),
            pytest.param(set(), {"tier": "basic"}, False, "bpc_test_basic", id="catch-all"),
        ],
    )
    def test_first_matching_rule_with_an_id_wins(
        self,
        config: PortalConfigFile,
        products: set[str],
        metadata: dict[str, str],
        livemode: bool,
        expected: str,
    ) -> None:
        selected = config.select(livemode=livemode, active_products=products, metadata=metadata)
        assert selected is not None
        assert selected.configuration_id == expected

    def test_metadata_rules_need_every_pair(self, tmp_path: Path) -> None:
        config = load_portal_config(
            write(
                tmp_path,
                '[configurations.eu]\nids = { test = "bpc_eu" }\n'
                '[[rules]]\nconfiguration = "eu"\nmetadata = { tier = "basic", region = "eu" }\n',
            )
        )
        partial = config.select(livemode=False, active_products=set(), metadata={"tier": "basic"})
        assert partial is None

    def test_no_rules_means_stripes_default(self) -> None:
        assert PortalConfigFile().select(livemode=False, active_products=set(), metadata={}) is None
