"""`portal-service portal-config diff|apply`: comparison, the requests sent to Stripe, ids
recorded in the file, the mirror row, and the command's exit codes."""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import typer
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from portal.fakes import STRIPE_API, StripeFake, _ok, stripe_error
from portal_service.config import Settings, get_settings
from portal_service.db import create_engine, create_sessionmaker
from portal_service.gateway.stripe import StripeGateway
from portal_service.mirror.tables import PortalConfiguration
from portal_service.portal.config_cli import portal_config_app
from portal_service.portal.config_diff import compare, declared_params
from portal_service.portal.config_sync import (
    CatalogProblems,
    ConfigSyncError,
    apply_file,
    diff_lines,
    idempotency_key,
    plan_configurations,
    record_ids,
)
from portal_service.portal.configs import (
    NamedConfiguration,
    PortalConfigFile,
    load_portal_config,
)

CONFIG = """\
# Portal configurations of the example app.
[configurations.basic]
default_return_url = "https://app.example.com/account"
ids = { live = "bpc_live_basic" }   # test: recorded by apply

[configurations.basic.business_profile]
headline = "Example billing"

[configurations.basic.features.customer_update]
enabled = true
allowed_updates = ["email", "address"]

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
default_allowed_updates = ["price"]
proration_behavior = "create_prorations"
products = [{ product = "prod_basic", prices = ["price_basic_m", "price_basic_y"] }]

[configurations.basic.features.subscription_pause]
enabled = false

[[rules]]
configuration = "basic"
"""


def _declared(text: str = CONFIG) -> NamedConfiguration:
    import tomllib

    return PortalConfigFile.model_validate(tomllib.loads(text)).configurations["basic"]


def _decode_form(form: dict[str, str]) -> dict[str, Any]:
    """Stripe's bracketed form fields back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in form.items():
        parts = key.replace("]", "").split("[")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            if value and all(k.isdigit() for k in value):
                return [fix(value[k]) for k in sorted(value, key=int)]
            return {k: fix(v) for k, v in value.items()}
        if value in ("true", "false"):
            return value == "true"
        return value

    decoded: dict[str, Any] = fix(root)
    return decoded


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = [] if value == "" else value


def configuration_object(configuration_id: str, **fields: Any) -> dict[str, Any]:
    """A configuration as Stripe returns it: every feature present, defaults off."""
    obj: dict[str, Any] = {
        "id": configuration_id,
        "object": "billing_portal.configuration",
        "active": True,
        "is_default": False,
        "livemode": False,
        "created": int(time.time()),
        "name": None,
        "metadata": {},
        "default_return_url": None,
        "business_profile": {
            "headline": None,
            "privacy_policy_url": None,
            "terms_of_service_url": None,
        },
        "login_page": {"enabled": False, "url": None},
        "features": {
            "customer_update": {"enabled": False, "allowed_updates": []},
            "invoice_history": {"enabled": False},
            "payment_method_update": {"enabled": False, "payment_method_configuration": None},
            "subscription_cancel": {
                "enabled": False,
                "mode": "at_period_end",
                "proration_behavior": "none",
                "cancellation_reason": {"enabled": False, "options": []},
            },
            "subscription_update": {
                "enabled": False,
                "default_allowed_updates": [],
                "products": [],
                "proration_behavior": "none",
            },
            "subscription_pause": {"enabled": False},
        },
    }
    _merge(obj, copy.deepcopy(fields))
    return obj


def matching_object(configuration_id: str) -> dict[str, Any]:
    """Stripe's side of CONFIG, lists in another order than the file's."""
    params = declared_params(_declared())
    obj = configuration_object(configuration_id, **params)
    obj["features"]["customer_update"]["allowed_updates"] = ["address", "email"]
    obj["features"]["subscription_update"]["products"] = [
        {"product": "prod_basic", "prices": ["price_basic_y", "price_basic_m"]}
    ]
    return obj


class ConfigurationsFake:
    """Portal configurations and products on top of the portal tests' Stripe fake."""

    def __init__(self, stripe: StripeFake) -> None:
        self.stripe = stripe
        self.configurations: dict[str, dict[str, Any]] = {}
        self.products: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        base = f"{STRIPE_API}/v1/billing_portal/configurations"
        stripe.router.get(url__regex=rf"^{STRIPE_API}/v1/products/(?P<oid>[^/?]+)$").mock(
            side_effect=self._retrieve_product
        )
        stripe.router.get(url__regex=rf"^{base}/(?P<oid>[^/?]+)$").mock(side_effect=self._retrieve)
        stripe.router.post(url__regex=rf"^{base}$").mock(side_effect=self._create)
        stripe.router.post(url__regex=rf"^{base}/(?P<oid>[^/?]+)$").mock(side_effect=self._update)

    def product(self, product_id: str, *price_ids: str, owner: str | None = None) -> None:
        self.products[product_id] = {"id": product_id, "object": "product", "active": True}
        for price_id in price_ids:
            self.stripe.prices[price_id] = {
                "id": price_id,
                "object": "price",
                "product": owner or product_id,
                "active": True,
            }

    @property
    def writes(self) -> list[Any]:
        return [
            r
            for r in self.stripe.requests
            if r.method == "POST" and r.path.startswith("/v1/billing_portal/configurations")
        ]

    def _retrieve_product(self, request: httpx.Request, oid: str) -> httpx.Response:
        self.stripe._record(request)
        if oid not in self.products:
            return stripe_error(404, code="resource_missing")
        return _ok(self.products[oid])

    def _retrieve(self, request: httpx.Request, oid: str) -> httpx.Response:
        sent = self.stripe._record(request)
        queued = self.stripe._queued(sent.path)
        if queued is not None:
            return queued
        if oid not in self.configurations:
            return stripe_error(404, code="resource_missing")
        return _ok(self.configurations[oid])

    def _create(self, request: httpx.Request) -> httpx.Response:
        sent = self.stripe._record(request)

        def make() -> httpx.Response:
            configuration_id = f"bpc_fake{next(self._ids)}"
            obj = configuration_object(configuration_id, **_decode_form(sent.form))
            self.configurations[configuration_id] = obj
            return _ok(obj)

        return self.stripe._idempotent(sent, make)

    def _update(self, request: httpx.Request, oid: str) -> httpx.Response:
        sent = self.stripe._record(request)
        if oid not in self.configurations:
            return stripe_error(404, code="resource_missing")

        def make() -> httpx.Response:
            _merge(self.configurations[oid], _decode_form(sent.form))
            return _ok(self.configurations[oid])

        return self.stripe._idempotent(sent, make)


@pytest.fixture
def stripe_configs(stripe_fake: StripeFake) -> ConfigurationsFake:
    fake = ConfigurationsFake(stripe_fake)
    fake.product("prod_basic", "price_basic_m", "price_basic_y")
    return fake


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "portal.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def gateway_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(stripe_api_key="sk_test_123", stripe_max_network_retries=0)


class TestCompare:
    @pytest.mark.sqlite
    def test_identical_configuration_has_no_differences(self) -> None:
        assert compare(_declared(), matching_object("bpc_1")) == []

    @pytest.mark.parametrize(
        ("path", "stripe_value"),
        [
            ("default_return_url", "https://app.example.com/old"),
            ("business_profile.headline", None),
            ("features.customer_update.enabled", False),
            ("features.customer_update.allowed_updates", ["email"]),
            ("features.invoice_history.enabled", False),
            ("features.payment_method_update.enabled", False),
            ("features.subscription_cancel.enabled", False),
            ("features.subscription_cancel.mode", "immediately"),
            ("features.subscription_cancel.proration_behavior", "create_prorations"),
            ("features.subscription_cancel.cancellation_reason.enabled", False),
            ("features.subscription_cancel.cancellation_reason.options", ["other"]),
            ("features.subscription_update.enabled", False),
            ("features.subscription_update.default_allowed_updates", ["price", "quantity"]),
            ("features.subscription_update.proration_behavior", "always_invoice"),
            ("features.subscription_pause.enabled", True),
        ],
    )
    def test_each_declared_field_that_differs_is_reported(
        self, path: str, stripe_value: Any
    ) -> None:
        obj = matching_object("bpc_1")
        *parents, leaf = path.split(".")
        node = obj
        for key in parents:
            node = node[key]
        node[leaf] = stripe_value

        differences = compare(_declared(), obj)

        assert [(d.path, d.actual) for d in differences] == [(path, stripe_value)]

    def test_a_price_missing_from_a_product_is_reported(self) -> None:
        obj = matching_object("bpc_1")
        obj["features"]["subscription_update"]["products"][0]["prices"] = ["price_basic_m"]

        differences = compare(_declared(), obj)

        assert [(d.path, d.declared, d.actual) for d in differences] == [
            (
                "features.subscription_update.products[prod_basic].prices",
                ["price_basic_m", "price_basic_y"],
                ["price_basic_m"],
            )
        ]

    def test_an_extra_product_in_stripe_is_reported(self) -> None:
        obj = matching_object("bpc_1")
        obj["features"]["subscription_update"]["products"].append(
            {"product": "prod_other", "prices": ["price_other"]}
        )

        differences = compare(_declared(), obj)

        assert [(d.path, d.actual) for d in differences] == [
            ("features.subscription_update.products", ["prod_basic", "prod_other"])
        ]

    def test_fields_the_file_leaves_out_are_not_compared(self) -> None:
        declared = _declared("[configurations.basic.features.invoice_history]\nenabled = true\n")
        obj = configuration_object(
            "bpc_1",
            default_return_url="https://elsewhere.example.com",
            business_profile={"headline": "Set in the Dashboard"},
            features={"invoice_history": {"enabled": True}, "customer_update": {"enabled": True}},
        )

        assert compare(declared, obj) == []

    def test_diff_lines_show_stripe_then_file_values(self) -> None:
        obj = matching_object("bpc_1")
        obj["features"]["subscription_cancel"]["mode"] = "immediately"
        config_file = PortalConfigFile(configurations={"basic": _declared()})
        plans = asyncio.run(_plans_from(config_file, {"bpc_test_basic": obj}))

        lines = [line for line, _style in diff_lines(plans, livemode=False)]

        assert lines == [
            "~ configuration basic (bpc_test_basic)",
            '-   features.subscription_cancel.mode = "immediately"',
            '+   features.subscription_cancel.mode = "at_period_end"',
        ]


class TestIdempotencyKey:
    @pytest.mark.sqlite
    def test_update_key_follows_the_state_it_changes(self) -> None:
        config_file = PortalConfigFile(configurations={"basic": _declared()})
        immediately = matching_object("bpc_test_basic")
        immediately["features"]["subscription_cancel"]["mode"] = "immediately"
        no_pause = matching_object("bpc_test_basic")
        no_pause["features"]["subscription_pause"]["enabled"] = True

        def key(obj: dict[str, Any]) -> str:
            [plan] = asyncio.run(_plans_from(config_file, {"bpc_test_basic": obj}))
            return idempotency_key(plan, livemode=False)

        # A retry against the same state replays; an edit made meanwhile is a new request.
        assert key(immediately) == key(copy.deepcopy(immediately))
        assert key(immediately) != key(no_pause)
        [plan] = asyncio.run(_plans_from(config_file, {"bpc_test_basic": immediately}))
        assert idempotency_key(plan, livemode=False) != idempotency_key(plan, livemode=True)


async def _plans_from(config_file: PortalConfigFile, objects: dict[str, Any]) -> list[Any]:
    """Plans against a gateway double that only answers retrieves of `objects`."""
    from portal_service.gateway import Fetched

    class Reader:
        async def retrieve(self, kind: str, object_id: str, *, account: str = "") -> Fetched:
            from datetime import UTC, datetime

            return Fetched(object=objects[object_id], fetched_at=datetime.now(UTC))

    data = config_file.model_dump()
    data["configurations"]["basic"]["ids"] = {"test": "bpc_test_basic"}
    return await plan_configurations(
        Reader(),  # type: ignore[arg-type]  # a read-only stand-in for the pure diff
        PortalConfigFile.model_validate(data),
        livemode=False,
    )


class TestPlan:
    @pytest.mark.sqlite
    async def test_configuration_without_an_id_for_the_mode_is_to_create(
        self, stripe_configs: ConfigurationsFake, gateway_settings: Settings, config_path: Path
    ) -> None:
        gateway = StripeGateway(gateway_settings)
        try:
            plans = await plan_configurations(
                gateway, load_portal_config(config_path), livemode=False
            )
        finally:
            await gateway.aclose()

        assert [(p.name, p.configuration_id, p.changed) for p in plans] == [("basic", None, True)]
        # The live id is not this mode's: nothing was read from Stripe.
        assert stripe_configs.stripe.requests == []
        lines = [line for line, _ in diff_lines(plans, livemode=False)]
        assert lines[0] == "+ configuration basic: to create (test mode)"
        assert '+   features.subscription_cancel.mode = "at_period_end"' in lines


class TestApply:
    async def _apply(self, settings: Settings, engine: AsyncEngine, path: Path) -> Any:
        gateway = StripeGateway(settings)
        try:
            return await apply_file(
                gateway,
                create_sessionmaker(engine),
                path,
                load_portal_config(path),
                livemode=settings.livemode,
            )
        finally:
            await gateway.aclose()

    @pytest.mark.sqlite
    async def test_creates_with_the_declared_fields_and_a_deterministic_key(
        self,
        stripe_configs: ConfigurationsFake,
        gateway_settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
    ) -> None:
        applied = await self._apply(gateway_settings, engine, config_path)

        [create] = stripe_configs.writes
        assert create.path == "/v1/billing_portal/configurations"
        assert create.form == {
            "default_return_url": "https://app.example.com/account",
            "business_profile[headline]": "Example billing",
            "features[customer_update][enabled]": "true",
            "features[customer_update][allowed_updates][0]": "email",
            "features[customer_update][allowed_updates][1]": "address",
            "features[invoice_history][enabled]": "true",
            "features[payment_method_update][enabled]": "true",
            "features[subscription_cancel][enabled]": "true",
            "features[subscription_cancel][mode]": "at_period_end",
            "features[subscription_cancel][proration_behavior]": "none",
            "features[subscription_cancel][cancellation_reason][enabled]": "true",
            "features[subscription_cancel][cancellation_reason][options][0]": "too_expensive",
            "features[subscription_cancel][cancellation_reason][options][1]": "other",
            "features[subscription_update][enabled]": "true",
            "features[subscription_update][default_allowed_updates][0]": "price",
            "features[subscription_update][products][0][product]": "prod_basic",
            "features[subscription_update][products][0][prices][0]": "price_basic_m",
            "features[subscription_update][products][0][prices][1]": "price_basic_y",
            "features[subscription_update][proration_behavior]": "create_prorations",
            "features[subscription_pause][enabled]": "false",
        }
        key = create.headers["Idempotency-Key"]
        assert key.startswith("portal-config-basic-")
        plans = await _plans_for_key(gateway_settings, config_path)
        # The same file and mode give the same key: a retried apply replays, never duplicates.
        assert key == idempotency_key(plans[0], livemode=False)
        assert applied.recorded == {"basic": "bpc_fake1"}

    @pytest.mark.sqlite
    async def test_records_the_new_id_for_this_mode_only_and_keeps_the_file(
        self,
        stripe_configs: ConfigurationsFake,
        gateway_settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
    ) -> None:
        await self._apply(gateway_settings, engine, config_path)

        text = await anyio.Path(config_path).read_text()
        loaded = load_portal_config(config_path).configurations["basic"]
        assert (loaded.ids.test, loaded.ids.live) == ("bpc_fake1", "bpc_live_basic")
        # Only the ids line changed; its comment and every other line stay as written.
        assert text == CONFIG.replace(
            'ids = { live = "bpc_live_basic" }',
            'ids = { live = "bpc_live_basic", test = "bpc_fake1" }',
        )

    @pytest.mark.sqlite
    async def test_writes_the_returned_configuration_into_the_mirror(
        self,
        stripe_configs: ConfigurationsFake,
        gateway_settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
    ) -> None:
        await self._apply(gateway_settings, engine, config_path)

        async with create_sessionmaker(engine)() as session:
            row = await session.get(PortalConfiguration, "bpc_fake1")
        assert row is not None
        assert row.default_return_url == "https://app.example.com/account"
        assert row.livemode is False
        assert row.features is not None
        assert row.features["subscription_cancel"]["mode"] == "at_period_end"

    async def test_second_apply_sends_nothing_when_stripe_matches(
        self,
        stripe_configs: ConfigurationsFake,
        gateway_settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
    ) -> None:
        await self._apply(gateway_settings, engine, config_path)
        applied = await self._apply(gateway_settings, engine, config_path)

        assert len(stripe_configs.writes) == 1
        assert [(w.name, w.action) for w in applied.written] == [("basic", "unchanged")]

    async def test_updates_an_existing_configuration_with_its_declared_fields(
        self,
        stripe_configs: ConfigurationsFake,
        gateway_settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
    ) -> None:
        existing = matching_object("bpc_test_basic")
        existing["features"]["subscription_cancel"]["mode"] = "immediately"
        existing["features"]["customer_update"]["allowed_updates"] = ["email", "address", "phone"]
        stripe_configs.configurations["bpc_test_basic"] = existing
        await anyio.Path(config_path).write_text(
            CONFIG.replace('ids = { live = "bpc_live_basic" }', 'ids = { test = "bpc_test_basic" }')
        )
        before = await anyio.Path(config_path).read_text()

        applied = await self._apply(gateway_settings, engine, config_path)

        [update] = stripe_configs.writes
        assert update.path == "/v1/billing_portal/configurations/bpc_test_basic"
        assert update.form["features[subscription_cancel][mode]"] == "at_period_end"
        assert update.form["features[customer_update][allowed_updates][1]"] == "address"
        assert "features[customer_update][allowed_updates][2]" not in update.form
        assert update.headers["Idempotency-Key"].startswith("portal-config-basic-")
        assert [(w.name, w.action) for w in applied.written] == [("basic", "updated")]
        assert (
            stripe_configs.configurations["bpc_test_basic"]["features"]["subscription_cancel"][
                "mode"
            ]
            == "at_period_end"
        )
        assert await anyio.Path(config_path).read_text() == before

    @pytest.mark.sqlite
    @pytest.mark.parametrize(
        ("arrange", "problem"),
        [
            (
                lambda fake: fake.stripe.prices.pop("price_basic_y"),
                "price price_basic_y: not found in Stripe (test mode)",
            ),
            (
                lambda fake: fake.products.pop("prod_basic"),
                "product prod_basic: not found in Stripe (test mode)",
            ),
            (
                lambda fake: fake.product("prod_other", "price_basic_m", owner="prod_other"),
                "price price_basic_m: belongs to product prod_other, not prod_basic "
                "(listed under it in the file)",
            ),
        ],
    )
    async def test_refuses_before_any_write_when_the_catalog_does_not_match(
        self,
        stripe_configs: ConfigurationsFake,
        gateway_settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
        arrange: Callable[[ConfigurationsFake], Any],
        problem: str,
    ) -> None:
        arrange(stripe_configs)

        with pytest.raises(CatalogProblems) as raised:
            await self._apply(gateway_settings, engine, config_path)

        assert raised.value.problems == [problem]
        assert stripe_configs.writes == []
        assert await anyio.Path(config_path).read_text() == CONFIG
        async with create_sessionmaker(engine)() as session:
            assert await session.get(PortalConfiguration, "bpc_fake1") is None

    async def test_a_declared_id_stripe_does_not_know_is_an_error(
        self,
        stripe_configs: ConfigurationsFake,
        gateway_settings: Settings,
        engine: AsyncEngine,
        config_path: Path,
    ) -> None:
        await anyio.Path(config_path).write_text(
            CONFIG.replace('ids = { live = "bpc_live_basic" }', 'ids = { test = "bpc_gone" }')
        )

        with pytest.raises(ConfigSyncError, match="bpc_gone does not exist in Stripe"):
            await self._apply(gateway_settings, engine, config_path)
        assert stripe_configs.writes == []


async def _plans_for_key(settings: Settings, path: Path) -> list[Any]:
    # The plan as it was before apply recorded the id: the file minus the new test id.
    config_file = load_portal_config(path)
    data = config_file.model_dump()
    data["configurations"]["basic"]["ids"]["test"] = None
    gateway = StripeGateway(settings)
    try:
        return await plan_configurations(
            gateway, PortalConfigFile.model_validate(data), livemode=False
        )
    finally:
        await gateway.aclose()


class TestRecordIds:
    @pytest.mark.sqlite
    @pytest.mark.parametrize(
        ("before", "after"),
        [
            (
                '[configurations.basic]\nids = { live = "bpc_l" } # keep\nx_unrelated = 1\n',
                '[configurations.basic]\nids = { live = "bpc_l", test = "bpc_new" } # keep\n'
                "x_unrelated = 1\n",
            ),
            (
                '[configurations.basic.ids]\nlive = "bpc_l"\ntest = "bpc_old"\n',
                '[configurations.basic.ids]\nlive = "bpc_l"\ntest = "bpc_new"\n',
            ),
            (
                '[configurations.basic]  # main\ndefault_return_url = "https://a.example"\n',
                '[configurations.basic]  # main\nids = { test = "bpc_new" }\n'
                'default_return_url = "https://a.example"\n',
            ),
            (
                "[configurations.basic.features.invoice_history]\nenabled = true\n",
                "[configurations.basic.features.invoice_history]\nenabled = true\n"
                '\n[configurations.basic.ids]\ntest = "bpc_new"\n',
            ),
        ],
    )
    def test_only_the_ids_of_this_mode_change(
        self, tmp_path: Path, before: str, after: str
    ) -> None:
        path = tmp_path / "portal.toml"
        path.write_text(before.replace("x_unrelated = 1\n", ""))
        expected = after.replace("x_unrelated = 1\n", "")

        record_ids(path, {"basic": "bpc_new"}, livemode=False)

        assert path.read_text() == expected

    @pytest.mark.sqlite
    def test_refuses_an_edit_it_cannot_make_safely(self, tmp_path: Path) -> None:
        # An inline configuration table: no line to edit, no table to append.
        text = '[configurations]\nbasic = { default_return_url = "https://a.example" }\n'
        path = tmp_path / "portal.toml"
        path.write_text(text)

        with pytest.raises(ConfigSyncError, match="add them by hand: basic = bpc_new"):
            record_ids(path, {"basic": "bpc_new"}, livemode=False)
        assert path.read_text() == text


# ---- the command ----------------------------------------------------------------------


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, database_url: str, config_path: Path
) -> Iterator[Callable[..., Any]]:
    app = typer.Typer()
    app.add_typer(portal_config_app)
    runner = CliRunner()
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PORTAL_CONFIG_FILE", str(config_path))
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_123")
    monkeypatch.setenv("STRIPE_MAX_NETWORK_RETRIES", "0")
    monkeypatch.setenv("PORTAL_RETURN_URL_ALLOWLIST", "https://app.example.com")
    get_settings.cache_clear()

    def invoke(*args: str) -> Any:
        get_settings.cache_clear()
        return runner.invoke(app, ["portal-config", *args])

    yield invoke
    get_settings.cache_clear()


class TestCommand:
    @pytest.mark.sqlite
    def test_diff_exits_1_when_a_configuration_is_to_create(
        self, cli: Callable[..., Any], stripe_configs: ConfigurationsFake
    ) -> None:
        result = cli("diff")

        assert result.exit_code == 1, result.output
        assert "+ configuration basic: to create (test mode)" in result.stdout
        assert stripe_configs.writes == []

    @pytest.mark.sqlite
    def test_diff_exits_0_when_stripe_matches(
        self, cli: Callable[..., Any], stripe_configs: ConfigurationsFake, config_path: Path
    ) -> None:
        stripe_configs.configurations["bpc_test_basic"] = matching_object("bpc_test_basic")
        config_path.write_text(
            CONFIG.replace('ids = { live = "bpc_live_basic" }', 'ids = { test = "bpc_test_basic" }')
        )

        result = cli("diff")

        assert result.exit_code == 0, result.output
        assert result.stdout == "  configuration basic (bpc_test_basic): identical\n"

    @pytest.mark.sqlite
    def test_diff_exits_2_with_one_line_when_stripe_fails(
        self, cli: Callable[..., Any], stripe_configs: ConfigurationsFake, config_path: Path
    ) -> None:
        config_path.write_text(
            CONFIG.replace('ids = { live = "bpc_live_basic" }', 'ids = { test = "bpc_test_basic" }')
        )
        stripe_configs.stripe.fail_next(
            "/v1/billing_portal/configurations/bpc_test_basic", stripe_error(500)
        )

        result = cli("diff")

        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1
        assert "configuration basic: reading bpc_test_basic" in result.stderr

    @pytest.mark.sqlite
    @pytest.mark.parametrize("command", [["diff"], ["apply"], ["apply", "--dry-run"]])
    def test_offline_mode_refuses(
        self,
        cli: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch,
        stripe_configs: ConfigurationsFake,
        command: list[str],
    ) -> None:
        monkeypatch.delenv("STRIPE_API_KEY")

        result = cli(*command)

        assert result.exit_code == 2
        assert result.stderr == (
            "portal-service portal-config: offline mode (no STRIPE_API_KEY): "
            "portal configurations live in Stripe\n"
        )
        assert stripe_configs.stripe.requests == []

    @pytest.mark.sqlite
    def test_apply_exits_2_and_writes_nothing_when_a_price_is_missing(
        self, cli: Callable[..., Any], stripe_configs: ConfigurationsFake, config_path: Path
    ) -> None:
        del stripe_configs.stripe.prices["price_basic_m"]

        result = cli("apply")

        assert result.exit_code == 2
        assert "price price_basic_m: not found in Stripe (test mode)" in result.stderr
        assert "nothing written" in result.stderr
        assert stripe_configs.writes == []
        assert config_path.read_text() == CONFIG

    @pytest.mark.sqlite
    def test_apply_dry_run_writes_nothing(
        self, cli: Callable[..., Any], stripe_configs: ConfigurationsFake, config_path: Path
    ) -> None:
        result = cli("apply", "--dry-run")

        assert result.exit_code == 1, result.output
        assert "to create" in result.stdout
        assert stripe_configs.writes == []
        assert config_path.read_text() == CONFIG

    @pytest.mark.sqlite
    def test_apply_creates_records_and_then_diff_is_clean(
        self, cli: Callable[..., Any], stripe_configs: ConfigurationsFake, config_path: Path
    ) -> None:
        result = cli("apply")

        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            "created basic: bpc_fake1 (test mode)",
            f"recorded 1 test id(s) in {config_path}",
        ]
        assert load_portal_config(config_path).configurations["basic"].ids.test == "bpc_fake1"
        assert cli("diff").exit_code == 0
        assert _mirrored_return_url(cli_database_url(), "bpc_fake1") == (
            "https://app.example.com/account"
        )


def cli_database_url() -> str:
    import os

    return os.environ["DATABASE_URL"]


def _mirrored_return_url(database_url: str, configuration_id: str) -> str | None:
    async def read() -> str | None:
        engine = create_engine(database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                row = await session.get(PortalConfiguration, configuration_id)
                return row.default_return_url if row is not None else None
        finally:
            await engine.dispose()

    return asyncio.run(read())
