"""`portal-service reconcile` and `sync --prune` / `--account`: drift between the mirror and
Stripe found, reported and repaired through the upsert path. Stripe is faked at the SDK's
HTTP boundary (respx, mirror.stripe_lists); the real StripeGateway does the paging."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import respx
import typer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from mirror.stripe_lists import StripeLists, error
from mirror.stripe_payloads import (
    customer,
    entitlement_summary,
    item,
    payment_method,
    subscription,
    utc,
)
from portal_service.config import Settings
from portal_service.db import create_sessionmaker
from portal_service.gateway.stripe import StripeGateway
from portal_service.mirror.reconcile import (
    RECONCILE_KINDS,
    Reconciler,
    drift_found,
    parse_kinds,
)
from portal_service.mirror.reconcile_cli import reconcile as reconcile_command
from portal_service.mirror.sync import run_sync
from portal_service.mirror.sync_cli import sync as sync_command
from portal_service.mirror.tables import (
    Customer,
    Entitlement,
    PaymentMethod,
    Subscription,
    SubscriptionItem,
    SyncState,
)

T0 = 1_760_000_000
LATER = T0 + 600
STRIPE_KEY = "sk_test_123"


@pytest.fixture
def lists(stripe_mock: respx.MockRouter) -> StripeLists:
    return StripeLists(stripe_mock, date=T0)


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(stripe_api_key=STRIPE_KEY, stripe_max_network_retries=0)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(settings)
    yield gateway
    await gateway.aclose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


def arrange(lists: StripeLists) -> None:
    """What Stripe held when the mirror was synced."""
    lists.lists["/v1/customers"] = [
        customer("cus_2", email="bob@example.com"),
        customer("cus_1", email="old@example.com"),
    ]
    lists.lists["/v1/customers/cus_1/payment_methods"] = [payment_method("pm_1")]
    lists.lists["/v1/subscriptions"] = []


def drift_in_stripe(lists: StripeLists) -> None:
    """Then, with no webhook: a changed email, a detached card, a new subscription."""
    lists.date = LATER
    lists.lists["/v1/customers"] = [
        customer("cus_2", email="bob@example.com"),
        customer("cus_1", email="new@example.com"),
    ]
    lists.lists["/v1/customers/cus_1/payment_methods"] = []
    lists.deleted["pm_1"] = payment_method("pm_1", customer=None)
    lists.lists["/v1/subscriptions"] = [subscription("sub_1", customer="cus_2")]


async def synced(
    sessionmaker: async_sessionmaker[AsyncSession], gateway: StripeGateway, **options: Any
) -> dict[tuple[str, str], int]:
    kinds = options.pop("kinds", ["customers", "subscriptions", "payment_methods"])
    return dict(await run_sync(sessionmaker, gateway, livemode=False, kinds=kinds, **options))


@pytest.mark.sqlite
class TestReconcile:
    async def test_finds_the_three_kinds_of_drift_and_fix_repairs_them(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        rows: Any,
    ) -> None:
        arrange(lists)
        await synced(sessionmaker, gateway)
        drift_in_stripe(lists)
        reconciler = Reconciler(sessionmaker, gateway, livemode=False)
        kinds: list[str] = ["customers", "subscriptions", "payment_methods"]

        found = await reconciler.run(kinds, fix=False)
        summary = {
            (kind, d.problem, d.object_id, d.fields)
            for kind, report in found.items()
            for d in report.drift
        }
        assert summary == {
            ("customers", "differs", "cus_1", ("email",)),
            ("subscriptions", "missing_here", "sub_1", ()),
            ("payment_methods", "missing_there", "pm_1", ()),
        }
        # Comparing wrote nothing.
        assert (await rows.get(Customer, "cus_1")).email == "old@example.com"
        assert await rows.get(Subscription, "sub_1") is None

        fixed = await reconciler.run(kinds, fix=True)
        assert {kind: dict(r.fixed) for kind, r in fixed.items()} == {
            "customers": {"applied": 1},
            "subscriptions": {"applied": 1},
            "payment_methods": {"applied": 1},
        }
        cus_1 = await rows.get(Customer, "cus_1")
        assert (cus_1.email, cus_1.source_ts) == ("new@example.com", utc(LATER))
        assert (await rows.get(Subscription, "sub_1")).customer_id == "cus_2"
        pm = await rows.get(PaymentMethod, "pm_1")
        assert (pm.customer_id, pm.deleted) == (None, False)

        again = await reconciler.run(kinds, fix=False)
        assert not drift_found(again)
        assert again["customers"].checked == 2

    async def test_a_payment_method_stripe_answers_404_for_is_tombstoned(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        rows: Any,
    ) -> None:
        arrange(lists)
        await synced(sessionmaker, gateway)
        drift_in_stripe(lists)
        del lists.deleted["pm_1"]  # retrieving it answers 404 now
        reconciler = Reconciler(sessionmaker, gateway, livemode=False)
        report = (await reconciler.run(["payment_methods"], fix=True))["payment_methods"]
        assert [(d.object_id, d.problem) for d in report.drift] == [("pm_1", "missing_there")]
        assert lists.sent("/v1/payment_methods/pm_1")
        assert (await rows.get(PaymentMethod, "pm_1")).deleted is True
        assert not drift_found(await reconciler.run(["payment_methods"], fix=False))

    async def test_a_changed_subscription_item_is_drift(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        rows: Any,
    ) -> None:
        lists.lists["/v1/subscriptions"] = [subscription("sub_1", items=[item(quantity=1)])]
        await synced(sessionmaker, gateway, kinds=["subscriptions"])
        lists.lists["/v1/subscriptions"] = [subscription("sub_1", items=[item(quantity=3)])]
        lists.date = LATER
        reconciler = Reconciler(sessionmaker, gateway, livemode=False)
        report = (await reconciler.run(["subscriptions"], fix=True))["subscriptions"]
        assert [(d.object_id, d.fields) for d in report.drift] == [("sub_1", ("items",))]
        assert [i.quantity for i in await rows.all(SubscriptionItem)] == [3]
        assert not drift_found(await reconciler.run(["subscriptions"], fix=False))

    async def test_an_object_stripe_no_longer_has_is_tombstoned(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        rows: Any,
    ) -> None:
        lists.lists["/v1/subscriptions"] = [subscription("sub_1")]
        await synced(sessionmaker, gateway, kinds=["subscriptions"])
        lists.lists["/v1/subscriptions"] = []  # gone, and retrieving it answers 404
        lists.date = LATER
        reconciler = Reconciler(sessionmaker, gateway, livemode=False)
        report = (await reconciler.run(["subscriptions"], fix=True))["subscriptions"]
        assert [(d.object_id, d.problem) for d in report.drift] == [("sub_1", "missing_there")]
        assert (await rows.get(Subscription, "sub_1")).deleted is True
        assert not drift_found(await reconciler.run(["subscriptions"], fix=False))

    async def test_entitlements_compared_per_customer(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        rows: Any,
    ) -> None:
        lists.lists["/v1/customers"] = [customer("cus_1")]
        await synced(sessionmaker, gateway, kinds=["customers"])
        features = entitlement_summary("cus_1", "pro", "sso")["entitlements"]["data"]
        # The fake filters lists by `customer`, which Stripe's entitlement objects lack.
        lists.lists["/v1/entitlements/active_entitlements"] = [
            {**feature, "customer": "cus_1"} for feature in features
        ]
        reconciler = Reconciler(sessionmaker, gateway, livemode=False)
        report = (await reconciler.run(["entitlements"], fix=True))["entitlements"]
        assert [(d.object_id, d.problem, d.fields) for d in report.drift] == [
            ("cus_1", "missing_here", ("+pro", "+sso"))
        ]
        assert sorted(e.lookup_key for e in await rows.all(Entitlement)) == ["pro", "sso"]
        assert not drift_found(await reconciler.run(["entitlements"], fix=False))

    async def test_sample_retrieves_only_n_objects(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
    ) -> None:
        lists.lists["/v1/customers"] = [customer(f"cus_{n}") for n in range(5)]
        await synced(sessionmaker, gateway, kinds=["customers"])
        lists.lists["/v1/customers"] = [customer(f"cus_{n}", name="Changed") for n in range(5)]
        lists.requests.clear()
        reconciler = Reconciler(
            sessionmaker, gateway, livemode=False, sample=2, rng=random.Random(7)
        )
        report = (await reconciler.run(["customers"], fix=False))["customers"]
        assert report.checked == 2
        assert [d.fields for d in report.drift] == [("name",), ("name",)]
        retrieved = [r.path for r in lists.requests]
        assert len(retrieved) == 2
        assert all(path.startswith("/v1/customers/cus_") for path in retrieved)
        assert not lists.sent("/v1/customers")  # no list in sample mode

    async def test_stripe_rate_limiting_is_waited_out(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
    ) -> None:
        lists.page_size = 2
        lists.lists["/v1/customers"] = [customer(f"cus_{n}") for n in range(5)]
        await synced(sessionmaker, gateway, kinds=["customers"])
        lists.fail(
            lambda sent: "starting_after" in sent.query,
            error(429, **{"Retry-After": "2"}),
            times=1,
        )
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        reconciler = Reconciler(sessionmaker, gateway, livemode=False, sleep=sleep)
        report = (await reconciler.run(["customers"], fix=False))["customers"]
        assert (report.checked, report.drift, slept) == (5, [], [2.0])
        # Continued after the last object it had, not from the start.
        resumed = [r.query.get("starting_after") for r in lists.sent("/v1/customers")][-3:]
        assert resumed == ["cus_1", "cus_1", "cus_3"]

    def test_only_names_known_kinds(self) -> None:
        assert parse_kinds(None) == list(RECONCILE_KINDS)
        assert parse_kinds("payment_methods,customers") == ["customers", "payment_methods"]
        with pytest.raises(ValueError, match="bogus"):
            parse_kinds("customers,bogus")


@pytest.mark.sqlite
class TestSyncPruneAndAccount:
    async def test_prune_settles_what_stripe_no_longer_lists(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        rows: Any,
    ) -> None:
        arrange(lists)
        await synced(sessionmaker, gateway)
        drift_in_stripe(lists)
        results = await synced(sessionmaker, gateway, prune=True)
        assert results[("payment_methods", "pruned applied")] == 1
        assert (await rows.get(PaymentMethod, "pm_1")).customer_id is None
        # Listed objects are not retrieved one by one.
        assert not lists.sent("/v1/customers/cus_1")

    async def test_without_prune_the_detached_method_stays(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        rows: Any,
    ) -> None:
        arrange(lists)
        await synced(sessionmaker, gateway)
        drift_in_stripe(lists)
        await synced(sessionmaker, gateway)
        assert (await rows.get(PaymentMethod, "pm_1")).customer_id == "cus_1"

    async def test_prune_refuses_partial_lists(
        self, sessionmaker: async_sessionmaker[AsyncSession], gateway: StripeGateway
    ) -> None:
        with pytest.raises(ValueError, match="whole lists"):
            await synced(sessionmaker, gateway, prune=True, since=T0)

    async def test_account_sync_sends_stripe_account_and_keeps_its_own_progress(
        self,
        lists: StripeLists,
        stripe_mock: respx.MockRouter,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        rows: Any,
    ) -> None:
        lists.lists["/v1/customers"] = [customer("cus_c1")]
        await synced(sessionmaker, gateway, kinds=["customers"], account="acct_123")
        sent = stripe_mock.calls.last.request
        assert sent.headers["Stripe-Account"] == "acct_123"
        row = await rows.get(Customer, "cus_c1")
        assert row.account == "acct_123"
        assert {s.kind for s in await rows.all(SyncState)} == {"customers@acct_123"}


class TestCommands:
    @pytest.fixture
    def invoke(
        self,
        database_url: str,
        engine: AsyncEngine,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> Iterator[Callable[..., Any]]:
        from portal_service.config import get_settings

        monkeypatch.chdir(tmp_path)
        for name, value in {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "STRIPE_API_KEY": STRIPE_KEY,
            "STRIPE_MAX_NETWORK_RETRIES": "0",
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        app = typer.Typer()
        app.command()(reconcile_command)
        app.command()(sync_command)
        yield lambda *args: CliRunner().invoke(app, list(args))
        get_settings.cache_clear()

    def test_reconcile_exits_1_on_drift_fixes_it_then_exits_0(
        self, lists: StripeLists, invoke: Callable[..., Any]
    ) -> None:
        arrange(lists)
        only = "customers,subscriptions,payment_methods"
        assert invoke("sync", "--only", only).exit_code == 0
        drift_in_stripe(lists)

        found = invoke("reconcile", "--only", only)
        assert found.exit_code == 1, found.output
        assert "customers cus_1: differs (email)" in found.output
        assert "subscriptions sub_1: missing here" in found.output
        assert "payment_methods pm_1: missing there" in found.output
        assert "drift: 3 object(s)" in found.output

        fixed = invoke("reconcile", "--only", only, "--fix")
        assert fixed.exit_code == 1, fixed.output  # drift was found (and repaired)
        assert "fixed" in fixed.output

        clean = invoke("reconcile", "--only", only)
        assert clean.exit_code == 0, clean.output
        assert "no drift" in clean.output

    def test_reconcile_refuses_bad_options(self, invoke: Callable[..., Any]) -> None:
        result = invoke("reconcile", "--only", "bogus")
        assert result.exit_code == 2
        assert "--only" in result.output
        assert invoke("reconcile", "--account", "nope").exit_code == 2

    @pytest.mark.parametrize("account", ["cus_1", "acct_", "acct_a/b", "acct_" + "x" * 40])
    def test_sync_refuses_a_bad_account(self, invoke: Callable[..., Any], account: str) -> None:
        result = invoke("sync", "--account", account)
        assert result.exit_code == 2
        assert "--account" in result.output

    def test_sync_prune_with_since_is_refused(self, invoke: Callable[..., Any]) -> None:
        result = invoke("sync", "--prune", "--since", "2026-01-01")
        assert result.exit_code == 2
        assert "--prune" in result.output
