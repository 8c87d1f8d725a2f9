"""`portal-service sync` (README.md, "Backfill and reconciliation"): backfill through the webhooks' upsert path,
resumable, rate-limit aware, and the Events API catch-up. Stripe is faked at the SDK's
HTTP boundary (respx); the real StripeGateway and SDK do the paging."""

from __future__ import annotations

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
    invoice,
    payment_method,
    portal_configuration,
    subscription,
    tax_id,
    utc,
)
from portal_service.config import Settings
from portal_service.db import create_sessionmaker
from portal_service.errors import StripeUnavailable
from portal_service.gateway.stripe import StripeGateway
from portal_service.mirror.events import received_from
from portal_service.mirror.intake import EventProcessor
from portal_service.mirror.sync import (
    SYNC_KINDS,
    Syncer,
    parse_only,
    parse_since,
    run_sync,
)
from portal_service.mirror.sync_cli import sync as sync_command
from portal_service.mirror.tables import (
    Customer,
    Invoice,
    PaymentMethod,
    PortalConfiguration,
    StripeEvent,
    Subscription,
    SyncState,
    TaxId,
)
from support import make_event

T0 = 1_760_000_000
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


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def run(
    sessionmaker: async_sessionmaker[AsyncSession], gateway: StripeGateway, sleeps: Sleeps
) -> Callable[..., Any]:
    async def run(kinds: list[str] | None = None, **options: Any) -> dict[tuple[str, str], int]:
        return dict(
            await run_sync(
                sessionmaker,
                gateway,
                livemode=False,
                kinds=kinds or list(SYNC_KINDS),
                sleep=sleeps,
                **options,
            )
        )

    return run


def fill(lists: StripeLists) -> None:
    """Three objects of each kind (newest first, as Stripe lists), for two pages of two."""
    lists.page_size = 2
    lists.lists["/v1/customers"] = [customer(f"cus_{n}") for n in (3, 2, 1)]
    lists.lists["/v1/subscriptions"] = [
        subscription(f"sub_{n}", customer="cus_1", status=status)
        for n, status in ((3, "canceled"), (2, "past_due"), (1, "active"))
    ]
    lists.lists["/v1/invoices"] = [invoice(f"in_{n}") for n in (3, 2, 1)]
    lists.lists["/v1/billing_portal/configurations"] = [
        portal_configuration(f"bpc_{n}", is_default=n == 1) for n in (3, 2, 1)
    ]
    lists.lists["/v1/customers/cus_1/payment_methods"] = [
        payment_method(f"pm_{n}") for n in (3, 2, 1)
    ]
    lists.lists["/v1/customers/cus_2/tax_ids"] = [
        tax_id(f"txi_{n}", customer="cus_2") for n in (3, 2, 1)
    ]


@pytest.mark.sqlite
class TestBackfill:
    async def test_every_kind_is_paged_through_and_applied(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any
    ) -> None:
        fill(lists)
        results = await run()
        for model, prefix in (
            (Customer, "cus"),
            (Subscription, "sub"),
            (Invoice, "in"),
            (PortalConfiguration, "bpc"),
            (PaymentMethod, "pm"),
            (TaxId, "txi"),
        ):
            for n in (1, 2, 3):
                row = await rows.get(model, f"{prefix}_{n}")
                assert row is not None, f"{prefix}_{n} not applied"
                # Stamped with Stripe's Date of the page, not an event.
                assert row.source_ts == utc(T0)
                assert row.source_event_id is None
        assert (await rows.get(Subscription, "sub_3")).status == "canceled"
        assert (await rows.get(TaxId, "txi_1")).customer_id == "cus_2"
        assert results[("customers", "applied")] == 3
        assert results[("payment_methods", "applied")] == 3

    async def test_second_pages_start_after_the_last_object_of_the_first(
        self, lists: StripeLists, run: Callable[..., Any]
    ) -> None:
        fill(lists)
        await run()
        for path, last in (
            ("/v1/customers", "cus_2"),
            ("/v1/subscriptions", "sub_2"),
            ("/v1/invoices", "in_2"),
            ("/v1/billing_portal/configurations", "bpc_2"),
            ("/v1/customers/cus_1/payment_methods", "pm_2"),
            ("/v1/customers/cus_2/tax_ids", "txi_2"),
        ):
            sent = lists.sent(path)
            assert len(sent) == 2, path
            assert "starting_after" not in sent[0].query
            assert sent[1].query["starting_after"] == last
            assert sent[0].query["limit"] == "100"
        assert all(r.query["status"] == "all" for r in lists.sent("/v1/subscriptions"))

    async def test_payment_methods_and_tax_ids_are_listed_for_each_mirrored_customer(
        self, lists: StripeLists, run: Callable[..., Any]
    ) -> None:
        fill(lists)
        await run()
        for n in (1, 2, 3):
            assert lists.sent(f"/v1/customers/cus_{n}/payment_methods")
            assert lists.sent(f"/v1/customers/cus_{n}/tax_ids")

    async def test_completed_kinds_are_recorded(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any
    ) -> None:
        fill(lists)
        await run()
        states = {s.kind: s for s in await rows.all(SyncState)}
        assert set(states) == set(SYNC_KINDS)
        assert all(s.completed_at is not None for s in states.values())
        assert states["customers"].cursor == "cus_1"


@pytest.fixture
def processor(
    sessionmaker: async_sessionmaker[AsyncSession], gateway: StripeGateway, settings: Settings
) -> EventProcessor:
    return EventProcessor.for_settings(sessionmaker, gateway, settings)


@pytest.mark.sqlite
class TestOrderingWithEvents:
    async def test_event_newer_than_the_sync_is_not_rolled_back(
        self,
        lists: StripeLists,
        run: Callable[..., Any],
        processor: EventProcessor,
        rows: Any,
    ) -> None:
        newer = make_event(
            "customer.subscription.updated", subscription(status="past_due"), created=T0 + 5
        )
        assert await processor.receive(received_from(newer)) == "processed"
        lists.lists["/v1/subscriptions"] = [subscription(status="active")]
        results = await run(["subscriptions"])
        row = await rows.get(Subscription, "sub_1")
        assert row.status == "past_due"
        assert row.source_event_id == newer["id"]
        assert results[("subscriptions", "stale")] == 1

    async def test_sync_newer_than_an_event_wins_and_a_late_older_event_is_stale(
        self,
        lists: StripeLists,
        run: Callable[..., Any],
        processor: EventProcessor,
        rows: Any,
    ) -> None:
        older = make_event(
            "customer.subscription.updated", subscription(status="past_due"), created=T0 - 10
        )
        assert await processor.receive(received_from(older)) == "processed"
        lists.lists["/v1/subscriptions"] = [subscription(status="active")]
        await run(["subscriptions"])
        row = await rows.get(Subscription, "sub_1")
        assert (row.status, row.source_ts, row.source_event_id) == ("active", utc(T0), None)
        late = make_event(
            "customer.subscription.updated", subscription(status="unpaid"), created=T0 - 5
        )
        assert await processor.receive(received_from(late)) == "stale"
        assert (await rows.get(Subscription, "sub_1")).status == "active"


@pytest.mark.sqlite
class TestOptions:
    async def test_only_syncs_the_named_kinds(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any
    ) -> None:
        fill(lists)
        await run(parse_only("invoices, customers"))
        assert lists.sent("/v1/customers")
        assert lists.sent("/v1/invoices")
        assert not lists.sent("/v1/subscriptions")
        assert not lists.sent("/v1/billing_portal/configurations")
        assert not lists.sent("/v1/customers/cus_1/payment_methods")
        assert await rows.count(Subscription) == 0
        assert await rows.count(Invoice) == 3

    def test_only_refuses_unknown_kinds(self) -> None:
        with pytest.raises(ValueError, match="bogus"):
            parse_only("customers,bogus")
        assert parse_only("tax_ids,customers") == ["customers", "tax_ids"]

    def test_since_reads_iso_dates_and_unix_times(self) -> None:
        assert parse_since("1760000000") == T0
        assert parse_since("2025-10-09T08:53:20Z") == T0
        assert parse_since("2025-10-09") == T0 - (8 * 3600 + 53 * 60 + 20)
        with pytest.raises(ValueError, match="yesterday"):
            parse_since("yesterday")

    async def test_since_sends_created_gte_where_stripe_filters_by_it(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any
    ) -> None:
        fill(lists)
        lists.lists["/v1/customers"][0]["created"] = T0  # only cus_3 is recent
        await run(since=T0 - 60)
        for path in ("/v1/customers", "/v1/subscriptions", "/v1/invoices"):
            assert lists.sent(path)[0].query["created[gte]"] == str(T0 - 60)
        # Portal configurations and per-customer lists have no such filter.
        assert "created[gte]" not in lists.sent("/v1/billing_portal/configurations")[0].query
        assert {c.id for c in await rows.all(Customer)} == {"cus_3"}

    def test_cli_refuses_bad_options_in_one_line(self) -> None:
        app = typer.Typer()
        app.command()(sync_command)
        runner = CliRunner()
        result = runner.invoke(app, ["--only", "customers,bogus"])
        assert result.exit_code == 2
        assert "--only: unknown kind(s) bogus" in result.output
        result = runner.invoke(app, ["--since", "soon"])
        assert result.exit_code == 2
        assert "--since: not an ISO date" in result.output


@pytest.mark.sqlite
class TestResume:
    async def test_resume_continues_after_the_last_page_applied(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any
    ) -> None:
        fill(lists)
        # Stripe fails the second page of customers for the whole first run.
        lists.fail(
            lambda sent: sent.path == "/v1/customers" and "starting_after" in sent.query,
            error(500),
        )
        with pytest.raises(StripeUnavailable):
            await run()
        assert {c.id for c in await rows.all(Customer)} == {"cus_3", "cus_2"}
        state = await rows.get(SyncState, "customers")
        assert (state.cursor, state.completed_at) == ("cus_2", None)

        lists.heal()
        lists.requests.clear()
        await run(resume=True)
        sent = lists.sent("/v1/customers")
        assert [r.query.get("starting_after") for r in sent] == ["cus_2"]
        assert {c.id for c in await rows.all(Customer)} == {"cus_3", "cus_2", "cus_1"}
        assert await rows.count(Subscription) == 3  # kinds never started run in full

        lists.requests.clear()
        await run(resume=True)
        assert lists.requests == []  # everything completed: nothing left to resume

    async def test_a_fresh_sync_starts_over(
        self, lists: StripeLists, run: Callable[..., Any]
    ) -> None:
        fill(lists)
        await run(["customers"])
        lists.requests.clear()
        await run(["customers"])
        assert "starting_after" not in lists.sent("/v1/customers")[0].query


@pytest.mark.sqlite
class TestRateLimits:
    async def test_429_waits_retry_after_then_continues(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any, sleeps: Sleeps
    ) -> None:
        fill(lists)
        lists.fail(
            lambda sent: sent.path == "/v1/invoices" and "starting_after" in sent.query,
            error(429, **{"Retry-After": "7"}),
            times=1,
        )
        await run(["invoices"])
        assert sleeps == [7.0]
        assert await rows.count(Invoice) == 3
        sent = lists.sent("/v1/invoices")
        assert [r.query.get("starting_after") for r in sent] == [None, "in_2", "in_2"]

    async def test_persistent_429_gives_up_after_a_few_tries(
        self, lists: StripeLists, run: Callable[..., Any], sleeps: Sleeps
    ) -> None:
        fill(lists)
        lists.fail(lambda sent: sent.path == "/v1/invoices", error(429, **{"Retry-After": "3"}))
        with pytest.raises(StripeUnavailable):
            await run(["invoices"])
        assert sleeps == [3.0, 3.0, 3.0]

    async def test_an_outage_without_retry_after_is_not_waited_out(
        self, lists: StripeLists, run: Callable[..., Any], sleeps: Sleeps
    ) -> None:
        fill(lists)
        lists.fail(lambda sent: sent.path == "/v1/invoices", error(503))
        with pytest.raises(StripeUnavailable):
            await run(["invoices"])
        assert sleeps == []


@pytest.mark.sqlite
class TestAppUserId:
    async def test_sync_links_the_user_named_in_metadata_when_free(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any
    ) -> None:
        lists.lists["/v1/customers"] = [customer(metadata={"app_user_id": "user_9"})]
        results = await run(["customers"])
        assert (await rows.get(Customer, "cus_1")).app_user_id == "user_9"
        assert results[("customers", "linked")] == 1

    async def test_a_user_held_by_another_live_customer_is_not_taken(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any, db: AsyncSession
    ) -> None:
        db.add(Customer(id="cus_other", app_user_id="user_9"))
        await db.commit()
        lists.lists["/v1/customers"] = [customer(metadata={"app_user_id": "user_9"})]
        await run(["customers"])
        assert (await rows.get(Customer, "cus_1")).app_user_id is None
        assert (await rows.get(Customer, "cus_other")).app_user_id == "user_9"

    async def test_a_user_held_only_by_a_deleted_customer_is_free(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any, db: AsyncSession
    ) -> None:
        db.add(Customer(id="cus_old", app_user_id="user_9", deleted=True))
        await db.commit()
        lists.lists["/v1/customers"] = [customer(metadata={"app_user_id": "user_9"})]
        await run(["customers"])
        assert (await rows.get(Customer, "cus_1")).app_user_id == "user_9"

    async def test_an_existing_link_is_never_overwritten(
        self, lists: StripeLists, run: Callable[..., Any], rows: Any, db: AsyncSession
    ) -> None:
        db.add(Customer(id="cus_1", app_user_id="user_1"))
        await db.commit()
        lists.lists["/v1/customers"] = [customer(metadata={"app_user_id": "user_9"})]
        await run(["customers"])
        assert (await rows.get(Customer, "cus_1")).app_user_id == "user_1"

    async def test_webhooks_never_link(self, processor: EventProcessor, rows: Any) -> None:
        event = make_event(
            "customer.created", customer(metadata={"app_user_id": "user_9"}), created=T0
        )
        assert await processor.receive(received_from(event)) == "processed"
        assert (await rows.get(Customer, "cus_1")).app_user_id is None


@pytest.mark.sqlite
class TestEventsCatchUp:
    async def test_missed_events_are_applied_oldest_first_and_recorded_ones_skipped(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        processor: EventProcessor,
        rows: Any,
    ) -> None:
        seen = make_event("customer.created", customer(), created=T0, event_id="evt_seen")
        assert await processor.receive(received_from(seen)) == "processed"
        created = make_event(
            "customer.subscription.created",
            subscription(status="active"),
            created=T0 + 2,
            event_id="evt_2",
        )
        updated = make_event(
            "customer.subscription.updated",
            subscription(status="past_due"),
            created=T0 + 3,
            event_id="evt_3",
        )
        lists.page_size = 2
        lists.lists["/v1/events"] = [updated, created, seen]  # newest first, as Stripe lists

        results = await Syncer(sessionmaker, gateway, livemode=False).catch_up_events(processor)

        sent = lists.sent("/v1/events")
        assert sent[0].query["created[gte]"] == str(T0)
        assert len(sent) == 2  # two pages
        # Newest first would have made evt_2 stale behind evt_3.
        assert dict(results) == {"processed": 2, "skipped": 1}
        row = await rows.get(Subscription, "sub_1")
        assert (row.status, row.source_event_id) == ("past_due", "evt_3")
        first, second = await rows.event("evt_2"), await rows.event("evt_3")
        assert first.status == second.status == "processed"
        assert first.received_at <= second.received_at

    async def test_with_no_recorded_event_everything_stripe_keeps_is_read(
        self,
        lists: StripeLists,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        processor: EventProcessor,
        rows: Any,
    ) -> None:
        lists.lists["/v1/events"] = [
            make_event("customer.created", customer(), created=T0, event_id="evt_1")
        ]
        results = await Syncer(sessionmaker, gateway, livemode=False).catch_up_events(processor)
        assert "created[gte]" not in lists.sent("/v1/events")[0].query
        assert dict(results) == {"processed": 1}
        assert await rows.count(StripeEvent) == 1
        assert (await rows.get(Customer, "cus_1")).source_event_id == "evt_1"


def _tables(connection: Any) -> set[str]:
    from sqlalchemy import inspect

    return set(inspect(connection).get_table_names())


@pytest.mark.sqlite
class TestSyncStateMigration:
    async def test_0002_adds_and_removes_only_sync_state(self, scratch_database_url: str) -> None:
        from portal_service import migrations
        from portal_service.db import create_engine

        async def tables() -> set[str]:
            engine = create_engine(scratch_database_url)
            try:
                async with engine.connect() as connection:
                    return await connection.run_sync(_tables)
            finally:
                await engine.dispose()

        await migrations.upgrade_async(scratch_database_url, "0001")
        before = await tables()
        assert "sync_state" not in before
        await migrations.upgrade_async(scratch_database_url, "0002")
        assert await tables() == before | {"sync_state"}
        await migrations.downgrade_async(scratch_database_url, "0001")
        assert await tables() == before


class TestCommand:
    """The command as the lead registers it (`app.command()(sync)`), settings from the
    environment as in production."""

    @pytest.fixture
    def invoke(
        self,
        database_url: str,
        engine: AsyncEngine,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> Iterator[Callable[..., Any]]:
        from portal_service.config import get_settings

        monkeypatch.chdir(tmp_path)  # no .env here
        for name, value in {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "STRIPE_API_KEY": STRIPE_KEY,
            "STRIPE_MAX_NETWORK_RETRIES": "0",
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        app = typer.Typer()
        app.command()(sync_command)
        yield lambda *args: CliRunner().invoke(app, list(args))
        get_settings.cache_clear()

    def test_sync_applies_and_reports_counts(
        self, lists: StripeLists, invoke: Callable[..., Any]
    ) -> None:
        fill(lists)
        result = invoke("--only", "customers")
        assert result.exit_code == 0, result.output
        assert "customers: 3 (applied 3)" in result.output
        assert not lists.sent("/v1/invoices")

    def test_an_interrupted_sync_exits_non_zero_and_says_how_to_resume(
        self, lists: StripeLists, invoke: Callable[..., Any]
    ) -> None:
        fill(lists)
        lists.fail(lambda sent: "starting_after" in sent.query, error(500))
        result = invoke("--only", "customers")
        assert result.exit_code == 1
        assert "sync stopped: stripe_unavailable" in result.output
        assert "sync --resume" in result.output
