"""/metrics: Prometheus text with the names README.md documents ("Deployment"), per route template, and
aggregated across worker processes in prometheus-client's multiprocess mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Path as PathParam
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from portal_service import migrations
from portal_service.config import Settings
from portal_service.db import create_engine, create_sessionmaker, utcnow
from portal_service.main import create_app
from portal_service.mirror.tables import StripeEvent

DOCUMENTED_METRICS = (
    "portal_webhook_events_total",
    "portal_webhook_apply_seconds",
    "portal_sessions_created_total",
    "portal_stripe_requests_total",
    "portal_http_requests_total",
    "portal_http_request_seconds",
    "portal_webhook_failed_events",
    "portal_webhook_oldest_pending_seconds",
)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text scrape (0 when it is not there yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


@pytest.fixture
async def app_client(
    engine: object, settings_factory: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_factory())

    @app.get("/test-only/things/{thing_id}")
    async def thing(thing_id: Annotated[str, PathParam()]) -> dict[str, str]:
        return {"id": thing_id}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.mark.sqlite
class TestMetricsEndpoint:
    async def test_metrics_are_prometheus_text_with_every_design_name(
        self, app_client: httpx.AsyncClient
    ) -> None:
        response = await app_client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        for name in DOCUMENTED_METRICS:
            assert f"# HELP {name} " in response.text

    async def test_requests_are_counted_by_route_template(
        self, app_client: httpx.AsyncClient
    ) -> None:
        labels = {"route": "/test-only/things/{thing_id}", "method": "GET", "status": "200"}
        before = sample(
            (await app_client.get("/metrics")).text, "portal_http_requests_total", **labels
        )
        await app_client.get("/test-only/things/a1")
        await app_client.get("/test-only/things/b2")
        text = (await app_client.get("/metrics")).text
        assert sample(text, "portal_http_requests_total", **labels) == before + 2
        # The raw path never becomes a label: that would make one series per id.
        assert 'route="/test-only/things/a1"' not in text
        latency = sample(
            text,
            "portal_http_request_seconds_count",
            route="/test-only/things/{thing_id}",
            method="GET",
        )
        assert latency >= 2

    async def test_unknown_paths_share_one_unmatched_label(
        self, app_client: httpx.AsyncClient
    ) -> None:
        labels = {"route": "unmatched", "method": "GET", "status": "404"}
        before = sample(
            (await app_client.get("/metrics")).text, "portal_http_requests_total", **labels
        )
        await app_client.get("/no/such/path/1")
        await app_client.get("/no/such/path/2")
        text = (await app_client.get("/metrics")).text
        assert sample(text, "portal_http_requests_total", **labels) == before + 2
        assert "/no/such/path" not in text

    async def test_docs_and_wrong_methods_keep_their_route_label(
        self, app_client: httpx.AsyncClient
    ) -> None:
        docs = {"route": "/docs", "method": "GET", "status": "200"}
        wrong_method = {"route": "/healthz", "method": "POST", "status": "405"}
        text = (await app_client.get("/metrics")).text
        before = [
            sample(text, "portal_http_requests_total", **labels) for labels in (docs, wrong_method)
        ]
        assert (await app_client.get("/docs")).status_code == 200
        assert (await app_client.post("/healthz")).status_code == 405
        text = (await app_client.get("/metrics")).text
        after = [
            sample(text, "portal_http_requests_total", **labels) for labels in (docs, wrong_method)
        ]
        assert after == [before[0] + 1, before[1] + 1]

    async def test_alerting_gauges_come_from_the_event_table(
        self, app_client: httpx.AsyncClient, db: AsyncSession
    ) -> None:
        now = utcnow()
        for event_id, status, age in [
            ("evt_failed", "failed", 600),
            ("evt_pending", "pending", 30),  # in flight: not failed yet (IN_FLIGHT)
            ("evt_done", "processed", 3600),
        ]:
            db.add(
                StripeEvent(
                    id=event_id,
                    type="customer.updated",
                    created=now - timedelta(seconds=age),
                    payload={"id": event_id},
                    received_at=now - timedelta(seconds=age),
                    status=status,
                )
            )
        await db.commit()
        text = (await app_client.get("/metrics")).text
        assert sample(text, "portal_webhook_failed_events") == 1
        # The failed event is the oldest unapplied one; a processed event never counts.
        assert 600 <= sample(text, "portal_webhook_oldest_pending_seconds") < 3600


# Run in a fresh interpreter: prometheus-client reads PROMETHEUS_MULTIPROC_DIR when the
# metrics are created (at import), so this process's registry cannot switch modes.
WORKER_SCRIPT = """
import asyncio, sys
import httpx
from portal_service.config import Settings
from portal_service.main import create_app

async def main(requests: int) -> None:
    app = create_app(Settings(_env_file=None))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            for _ in range(requests):
                assert (await client.get("/healthz")).status_code == 200
            response = await client.get("/metrics")
            assert response.status_code == 200
            sys.stdout.write(response.text)

asyncio.run(main(int(sys.argv[1])))
"""


@pytest.mark.slow
@pytest.mark.sqlite
class TestMultiprocessMetrics:
    def run_worker(self, requests: int, *, metrics_dir: Path, database_url: str) -> str:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "DATABASE_URL": database_url,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
        }
        result = subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-c", WORKER_SCRIPT, str(requests)],
            env=env,
            cwd=metrics_dir.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def test_counts_from_every_process_are_summed(
        self, engine: object, tmp_path: Path, database_url: str
    ) -> None:
        # `engine` empties the event table, so the gauge read from it is 0.
        metrics_dir = tmp_path / "metrics"
        metrics_dir.mkdir()
        self.run_worker(2, metrics_dir=metrics_dir, database_url=database_url)
        text = self.run_worker(1, metrics_dir=metrics_dir, database_url=database_url)
        labels = {"route": "/healthz", "method": "GET", "status": "200"}
        assert sample(text, "portal_http_requests_total", **labels) == 3
        assert sample(text, "portal_webhook_failed_events") == 0
        assert list(metrics_dir.glob("counter_*.db")), "no multiprocess files were written"


@pytest.mark.sqlite
class TestMetricsUnderLoad:
    async def test_scrape_reads_the_gauges_while_a_sqlite_writer_holds_the_lock(
        self, client_factory: Callable[..., Any], tmp_path: Path
    ) -> None:
        # The gauges are a read: a scrape must not queue for SQLite's write lock (for up to
        # busy_timeout, 30 s) while a webhook is being applied.
        url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
        await migrations.upgrade_async(url)
        engine = create_engine(url)
        try:
            async with create_sessionmaker(engine)() as session:
                session.add(
                    StripeEvent(
                        id="evt_failed",
                        type="customer.updated",
                        created=utcnow(),
                        payload={"id": "evt_failed"},
                        status="failed",
                    )
                )
                await session.commit()
            async with engine.connect() as writer:
                await writer.execute(text("DELETE FROM customers"))  # takes the lock
                async with client_factory(database_url=url) as client:
                    scrape = await asyncio.wait_for(client.get("/metrics"), timeout=10)
                await writer.rollback()
        finally:
            await engine.dispose()
        assert scrape.status_code == 200
        assert sample(scrape.text, "portal_webhook_failed_events") == 1
