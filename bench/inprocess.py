"""portal-service benchmarks: requests through the real ASGI app, in-process, on SQLite and on
PostgreSQL when one is reachable. Writes its results into bench/README.md.

    make bench                  # = .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --no-write --scale 0.2    # a quick look, README untouched

Absolute numbers depend on the machine; each case is also reported as a ratio to the
GET /healthz baseline measured in the same run, which travels better between machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from portal_service import migrations
from portal_service.config import Settings
from portal_service.db import create_engine, create_sessionmaker
from portal_service.main import create_app
from portal_service.mirror.signatures import sign
from portal_service.mirror.tables import Customer, Entitlement, Subscription, SubscriptionItem

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "bench" / "README.md"
START_MARK = "<!-- bench:inprocess:start -->"
END_MARK = "<!-- bench:inprocess:end -->"

WEBHOOK_SECRET = "whsec_bench_secret"
JWT_SECRET = "bench-jwt-secret-long-enough-for-hs256-signing"
BENCH_USER = "bench_user"
BENCH_CUSTOMER = "cus_bench_reader"
API_VERSION = "2026-10-28.endive"
CONCURRENCY = 8


@dataclass
class Result:
    case: str
    backend: str
    count: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    note: str = ""
    available: bool = True

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class NotAvailable(Exception):
    """The route answers 404 `not_found`: it does not exist in this build."""


# --- Databases -----------------------------------------------------------------------


def _port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def postgres_base_url() -> str | None:
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    if _port_open("127.0.0.1", 5432):
        return "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    return None


async def _pg_admin(base_url: str, statement: str) -> None:
    admin = make_url(base_url).set(database="postgres").render_as_string(hide_password=False)
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def scratch_database(backend: str, pg_base: str | None) -> Iterator[str]:
    """A freshly migrated database, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="portal-bench-") as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            migrations.upgrade(url)
            yield url
        return
    assert pg_base is not None
    name = f"portal_bench_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_admin(pg_base, f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(pg_base).set(database=name).render_as_string(hide_password=False)
        migrations.upgrade(url)
        yield url
    finally:
        asyncio.run(_pg_admin(pg_base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def bench_settings(database_url: str) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "environment": "test",
        "database_url": database_url,
        "stripe_webhook_secrets": WEBHOOK_SECRET,
        "auth_jwt_secret": JWT_SECRET,
        # Every request logs a line at INFO; at WARNING the numbers measure the service,
        # not the terminal.
        "log_level": "WARNING",
    }
    return Settings(**values)


# --- Payloads ------------------------------------------------------------------------


def subscription_event(sub_id: str, customer_id: str, *, created: int) -> dict[str, Any]:
    period_start = created - 86_400
    period_end = period_start + 30 * 86_400
    item: dict[str, Any] = {
        "id": f"si_{sub_id[4:]}",
        "object": "subscription_item",
        "created": created,
        "metadata": {},
        "price": {
            "id": "price_bench",
            "object": "price",
            "active": True,
            "currency": "eur",
            "livemode": False,
            "product": "prod_bench",
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "tax_behavior": "exclusive",
            "type": "recurring",
            "unit_amount": 1500,
        },
        "quantity": 1,
        "subscription": sub_id,
        "current_period_start": period_start,
        "current_period_end": period_end,
    }
    subscription: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": "eur",
        "customer": customer_id,
        "default_payment_method": None,
        "ended_at": None,
        "items": {"object": "list", "data": [item], "has_more": False, "total_count": 1},
        "latest_invoice": None,
        "livemode": False,
        "metadata": {},
        "pause_collection": None,
        "schedule": None,
        "start_date": created,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
        "discounts": [],
    }
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "type": "customer.subscription.updated",
        "created": created,
        "livemode": False,
        "api_version": API_VERSION,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": subscription},
    }


def signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    signature = sign(body, WEBHOOK_SECRET, timestamp=int(time.time()))
    return body, {"Stripe-Signature": signature, "Content-Type": "application/json"}


def webhook_batch(prefix: str, *, objects: int, rounds: int) -> list[tuple[bytes, dict[str, str]]]:
    """`rounds` newer events for each of `objects` subscriptions: first inserts, then updates."""
    base = int(time.time()) - 3600
    return [
        signed(subscription_event(f"sub_{prefix}{i}", f"cus_{prefix}{i % 50}", created=base + r))
        for r in range(rounds)
        for i in range(objects)
    ]


async def seed_reader(database_url: str) -> None:
    """One user with a customer, an active subscription and three entitlement features."""
    now = datetime.now(UTC)
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            session.add(Customer(id=BENCH_CUSTOMER, app_user_id=BENCH_USER, email="b@example.com"))
            session.add(
                Subscription(
                    id="sub_bench_reader",
                    customer_id=BENCH_CUSTOMER,
                    status="active",
                    collection_method="charge_automatically",
                    current_period_start=now - timedelta(days=3),
                    current_period_end=now + timedelta(days=27),
                )
            )
            session.add(
                SubscriptionItem(
                    id="si_bench_reader",
                    subscription_id="sub_bench_reader",
                    price_id="price_bench",
                    product_id="prod_bench",
                    quantity=1,
                    usage_type="licensed",
                    tax_behavior="exclusive",
                    interval="month",
                    current_period_start=now - timedelta(days=3),
                    current_period_end=now + timedelta(days=27),
                )
            )
            for n in range(3):
                session.add(
                    Entitlement(
                        id=f"ent_bench_{n}",
                        customer_id=BENCH_CUSTOMER,
                        feature_id=f"feat_{n}",
                        lookup_key=f"feature-{n}",
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()


# --- Measurement ---------------------------------------------------------------------


def check_available(response: httpx.Response) -> None:
    problem = response.headers.get("content-type", "").startswith("application/problem+json")
    if response.status_code == 404 and problem and response.json().get("code") == "not_found":
        raise NotAvailable()


async def timed(
    result: Result,
    calls: Sequence[Callable[[], Awaitable[httpx.Response]]],
    *,
    expect: Callable[[httpx.Response], str],
    concurrency: int = 1,
) -> None:
    outcomes: Counter[str] = Counter()
    limit = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[httpx.Response]]) -> None:
        async with limit:
            started = time.perf_counter()
            response = await call()
            result.latencies.append(time.perf_counter() - started)
            outcomes[expect(response)] += 1

    started = time.perf_counter()
    if concurrency == 1:
        for call in calls:
            await one(call)
    else:
        await asyncio.gather(*(one(call) for call in calls))
    result.seconds = time.perf_counter() - started
    result.count = len(calls)
    others = {k: v for k, v in outcomes.items() if k != "ok"}
    if others:
        result.note = "other answers: " + ", ".join(f"{k} x{v}" for k, v in sorted(others.items()))


def expect_status(status: int) -> Callable[[httpx.Response], str]:
    def check(response: httpx.Response) -> str:
        return "ok" if response.status_code == status else f"HTTP {response.status_code}"

    return check


def expect_webhook(response: httpx.Response) -> str:
    if response.status_code != 200:
        code = ""
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            code = " " + str(response.json().get("code"))
        return f"HTTP {response.status_code}{code}"
    status = response.json().get("status")
    # With deliveries in flight together, a newer event for the same subscription can win
    # before an older one lands: that one is answered `stale`, which is correct.
    return "ok" if status == "processed" else f"status {status}"


async def run_backend(
    backend: str, database_url: str, *, scale: float, with_baseline: bool
) -> list[Result]:
    results: list[Result] = []
    app = create_app(bench_settings(database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            if with_baseline:
                results.append(await bench_healthz(client, scale=scale))
            results.append(
                await bench_entitlements(
                    client, app.state.engine, backend, database_url, scale=scale
                )
            )
            results.extend(await bench_webhooks(client, app.state.engine, backend, scale=scale))
    return results


async def bench_healthz(client: httpx.AsyncClient, *, scale: float) -> Result:
    result = Result("GET /healthz (baseline)", "-")
    for _ in range(200):
        await client.get("/healthz")
    count = max(100, int(3000 * scale))
    await timed(result, [lambda: client.get("/healthz")] * count, expect=expect_status(200))
    return result


async def bench_entitlements(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    backend: str,
    database_url: str,
    *,
    scale: float,
) -> Result:
    result = Result("GET /me/entitlements", backend)
    await seed_reader(database_url)
    token = jwt.encode(
        {"sub": BENCH_USER, "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256"
    )
    headers = {"Authorization": f"Bearer {token}"}
    try:
        first = await client.get("/me/entitlements", headers=headers)
        check_available(first)
    except NotAvailable:
        result.available = False
        result.note = "not available: GET /me/entitlements answers 404 not_found in this build"
        return result
    if first.status_code != 200 or first.json().get("has_access") is not True:
        result.note = f"unexpected first answer: HTTP {first.status_code} {first.text[:120]}"
    for _ in range(50):
        await client.get("/me/entitlements", headers=headers)
    count = max(50, int(1500 * scale))
    with counting_statements(engine) as counted:
        await timed(
            result,
            [lambda: client.get("/me/entitlements", headers=headers)] * count,
            expect=expect_status(200),
        )
    # On SQLite the read's deferred BEGIN is one of these (see counting_statements).
    note = f"{counted['statement'] / count:.1f} SQL statements per request"
    result.note = f"{note}; {result.note}" if result.note else note
    return result


async def bench_webhooks(
    client: httpx.AsyncClient, engine: AsyncEngine, backend: str, *, scale: float
) -> list[Result]:
    sequential = Result("POST /webhooks (sequential)", backend)
    concurrent = Result(f"POST /webhooks (concurrency {CONCURRENCY})", backend)
    probe_body, probe_headers = signed(subscription_event("sub_probe", "cus_probe", created=1))
    try:
        check_available(await client.post("/webhooks", content=probe_body, headers=probe_headers))
    except NotAvailable:
        for result in (sequential, concurrent):
            result.available = False
            result.note = "not available: POST /webhooks answers 404 not_found in this build"
        return [sequential, concurrent]
    objects = max(20, int(200 * scale))
    for result, prefix, limit in ((sequential, "seq", 1), (concurrent, "par", CONCURRENCY)):
        batch = webhook_batch(f"{prefix}{backend[:2]}", objects=objects, rounds=3)
        calls = [
            partial(client.post, "/webhooks", content=body, headers=headers)
            for body, headers in batch
        ]
        with counting_statements(engine) as counted:
            await timed(result, calls, expect=expect_webhook, concurrency=limit)
        if limit == 1:
            per_event = counted.total() / len(calls)
            note = f"{per_event:.1f} SQL statements per event"
            result.note = f"{note}; {result.note}" if result.note else note
    return [sequential, concurrent]


@contextmanager
def counting_statements(engine: AsyncEngine) -> Iterator[Counter[str]]:
    """What the engine sends, each a round trip: statements (savepoints included) and
    BEGIN/COMMIT/ROLLBACK. Not the pool's pre-ping on checkout, which SQLAlchemy runs
    below these events (on asyncpg: BEGIN, `;`, ROLLBACK)."""
    counted: Counter[str] = Counter()
    sync_engine = engine.sync_engine

    def statement(*_args: Any) -> None:
        counted["statement"] += 1

    def transaction(kind: str) -> Callable[..., None]:
        def count(*_args: Any) -> None:
            counted[kind] += 1

        return count

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", statement),
        ("commit", transaction("commit")),
        ("rollback", transaction("rollback")),
    ]
    if engine.dialect.name != "sqlite":
        # SQLite's BEGIN IMMEDIATE is a statement of its own (portal_service.db).
        listeners.append(("begin", transaction("begin")))
    for name, listener in listeners:
        event.listen(sync_engine, name, listener)
    try:
        yield counted
    finally:
        for name, listener in listeners:
            event.remove(sync_engine, name, listener)


# --- Report --------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPU ({model}), Python {platform.python_version()}, {platform.system()}"
    )


def revision() -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"

    def query(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - read-only git queries
            [git, *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = query("rev-parse", "--short", "HEAD")
        dirty = query("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted changes" if dirty else head


def render(results: list[Result], *, command: str, skipped: list[str], elapsed: float) -> str:
    baseline = next(r for r in results if r.case.startswith("GET /healthz"))
    lines = [
        f"Run `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, revision {revision()}, "
        f"{machine()}; took {elapsed:.0f} s.",
        "",
        "| case | database | requests | per second | vs baseline | p50 ms | p99 ms | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if not r.available:
            lines.append(f"| {r.case} | {r.backend} | - | - | - | - | - | {r.note} |")
            continue
        ratio = r.rate / baseline.rate if baseline.rate else 0.0
        lines.append(
            f"| {r.case} | {r.backend} | {r.count} | {r.rate:,.0f} | {ratio:.2f}x | "
            f"{r.percentile(0.5):.2f} | {r.percentile(0.99):.2f} | {r.note} |"
        )
    for note in skipped:
        lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"


def write_readme(report: str) -> None:
    current = README.read_text()
    start, end = current.index(START_MARK), current.index(END_MARK)
    README.write_text(current[: start + len(START_MARK)] + "\n" + report + current[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every request count")
    parser.add_argument("--no-write", action="store_true", help="print only; leave README alone")
    args = parser.parse_args()

    started = time.perf_counter()
    pg_base = postgres_base_url()
    backends = ["sqlite"] + (["postgresql"] if pg_base else [])
    skipped = [] if pg_base else ["PostgreSQL: not reachable (set BENCH_DATABASE_URL); skipped."]
    results: list[Result] = []
    for index, backend in enumerate(backends):
        with scratch_database(backend, pg_base) as url:
            results.extend(
                asyncio.run(run_backend(backend, url, scale=args.scale, with_baseline=index == 0))
            )
    elapsed = time.perf_counter() - started

    command = "make bench" if args.scale == 1.0 else f"bench/run.py --scale {args.scale}"
    report = render(results, command=command, skipped=skipped, elapsed=elapsed)
    sys.stdout.write(report)
    if not args.no_write:
        write_readme(report)
        sys.stdout.write(f"\nwritten to {README.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
