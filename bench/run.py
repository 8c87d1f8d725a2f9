"""portal-service over real HTTP, against peers measured in the same run (issue 8).

    make bench                                   # = .venv/bin/python bench/run.py; rewrites bench/README.md
    .venv/bin/python bench/run.py --quick        # a few seconds per run, 100k history; README untouched

Every server is started here on 127.0.0.1 (a free port), driven by `wrk` (installed with
apt-get when missing) and stopped afterwards; the databases are scratch ones on PostgreSQL
(BENCH_DATABASE_URL, else TEST_DATABASE_URL, else 127.0.0.1:5432), dropped at the end.
Nothing leaves the machine: Stripe is a local fake (bench/fake_stripe.py).

Each case alternates the service and its peer run for run, so both see the same machine
load, and is reported as a ratio to that peer. See bench/README.md for the cases.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import jwt
from sqlalchemy.engine import make_url

from portal_service import migrations
from portal_service.mirror.signatures import sign

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = ROOT / "bench" / "README.md"
LUA = ROOT / "bench" / "requests.lua"
START_MARK = "<!-- bench:results:start -->"
END_MARK = "<!-- bench:results:end -->"

WEBHOOK_SECRET = "whsec_bench_secret"
JWT_SECRET = "bench-jwt-secret-long-enough-for-hs256-signing"
STRIPE_KEY = "sk_test_bench"
API_VERSION = "2026-10-28.endive"
SUBSCRIPTIONS = 4000  # distinct subscriptions per webhook run
EVENTS_PER_SECOND_CAP = 3000  # events generated per second of a run: more than any target does
PORTAL_USERS = 64


@dataclass(frozen=True)
class Mode:
    duration: int
    warmup: int
    rounds: int
    history: int
    sync_objects: int


FULL = Mode(duration=8, warmup=2, rounds=2, history=1_000_000, sync_objects=4000)
QUICK = Mode(duration=3, warmup=1, rounds=1, history=100_000, sync_objects=1000)


@dataclass
class Run:
    """One wrk run's summary (bench/requests.lua)."""

    requests: int
    seconds: float
    errors: int  # connect, read, write, timeouts
    non_2xx: int
    unexpected: int  # not 200/201 with the expected body (includes non_2xx)
    p50_ms: float
    p99_ms: float
    rows: int | None = None  # rows really written, where counted
    cpu_seconds: float = 0.0  # CPU the server's processes used during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Row:
    case: str
    target: str
    runs: list[Run] = field(default_factory=list)
    rss_mb: float | None = None
    vs: Row | None = None  # the row this one is a ratio to
    note: str = ""
    target_note: str = ""

    @property
    def rate(self) -> float:
        seconds = sum(r.seconds for r in self.runs)
        return sum(r.requests for r in self.runs) / seconds if seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        """Server CPU per answered request: less sensitive to the machine's load than rates."""
        requests = sum(r.requests for r in self.runs)
        return sum(r.cpu_seconds for r in self.runs) * 1000 / requests if requests else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs) if self.runs else 0.0

    @property
    def p99(self) -> float:
        return max((r.p99_ms for r in self.runs), default=0.0)

    @property
    def errors(self) -> int:
        return sum(r.errors + r.unexpected for r in self.runs)

    @property
    def acknowledged(self) -> int:
        return sum(r.requests - r.non_2xx for r in self.runs)

    @property
    def rows(self) -> int | None:
        counted = [r.rows for r in self.runs]
        return None if any(c is None for c in counted) else sum(c or 0 for c in counted)


# --- Processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    sys.stderr.write("bench: wrk not found; installing the Debian package\n")
    apt = shutil.which("apt-get")
    if apt is None:
        raise SystemExit("bench: wrk is missing and there is no apt-get to install it")
    subprocess.run([apt, "update", "-qq"], check=True)  # noqa: S603
    subprocess.run([apt, "install", "-y", "-qq", "wrk"], check=True)  # noqa: S603
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: wrk is still missing after apt-get install")
    return found


def peak_rss_mb(pid: int) -> float:
    """The highest VmHWM over the process and its children (uvicorn's workers)."""
    peak = 0
    for one in _tree(pid):
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


def _tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids.extend(int(child) for child in (task / "children").read_text().split())
    except OSError:
        pass
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and its children (uvicorn's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for one in _tree(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


class Server:
    """A process serving HTTP on 127.0.0.1:port, started and stopped by the bench."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], port: int) -> None:
        self.name, self.port = name, port
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
            list(argv),
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen within 60 s: {self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def rss_mb(self) -> float:
        return peak_rss_mb(self.process.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def uvicorn_argv(app: str, port: int) -> list[str]:
    # The flags `portal-service serve` uses (uvloop and httptools come with uvicorn[standard]).
    return [
        str(BIN / "uvicorn"),
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
        "--no-server-header",
    ]


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        "ENVIRONMENT": "development",
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "AUTH_JWT_SECRET": JWT_SECRET,
        "PORTAL_RETURN_URL_ALLOWLIST": "https://app.example.com",
        "PORTAL_DEFAULT_RETURN_URL": "https://app.example.com/account",
        "RATE_LIMIT_PORTAL_SESSIONS": "1000000/minute",
        "LOG_LEVEL": "WARNING",
        "STRIPE_API_KEY": "",
    }
    env.update(extra)
    return env


def start_service(name: str, database_url: str, *, workers: int = 1, **extra: str) -> Server:
    port = free_port()
    argv = [str(BIN / "portal-service"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers)]
    return Server(name, argv, service_env(database_url, **extra), port)


def wrk(
    tool: str,
    server: Server,
    lines: list[str],
    *,
    connections: int,
    duration: int,
    expect: str = "",
) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as requests:
        requests.write("\n".join(lines) + "\n")
    cpu_before = server.cpu_seconds()
    try:
        completed = subprocess.run(  # noqa: S603 - wrk from PATH, our script
            [
                tool,
                "-t1",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "10s",
                "-s",
                str(LUA),
                server.url,
            ],
            env={**os.environ, "BENCH_REQUESTS": requests.name, "BENCH_EXPECT": expect},
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 120,
        )
    finally:
        os.unlink(requests.name)
    cpu = server.cpu_seconds() - cpu_before
    line = next(x for x in completed.stdout.splitlines() if x.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
    return Run(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        non_2xx=data["status_errors"],
        unexpected=data["unexpected"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        cpu_seconds=cpu,
    )


# --- Requests ------------------------------------------------------------------------


def subscription_event(sub_id: str, customer_id: str, *, event_id: str, created: int) -> str:
    """A `customer.subscription.updated` of about 3 KB, shaped like Stripe's."""
    period_start = created - 86400
    price = {
        "id": "price_bench",
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": 1_700_000_000,
        "currency": "eur",
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": "Pro monthly",
        "product": "prod_bench",
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "tax_behavior": "exclusive",
        "tiers_mode": None,
        "type": "recurring",
        "unit_amount": 1500,
        "unit_amount_decimal": "1500",
    }
    item = {
        "id": "si_" + sub_id.removeprefix("sub_"),
        "object": "subscription_item",
        "created": period_start,
        "discounts": [],
        "metadata": {},
        "price": price,
        "quantity": 1,
        "subscription": sub_id,
        "tax_rates": [],
        "current_period_start": period_start,
        "current_period_end": period_start + 30 * 86400,
    }
    subscription = {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": period_start,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"type": "classic"},
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": period_start,
        "currency": "eur",
        "customer": customer_id,
        "days_until_due": None,
        "default_payment_method": "pm_" + customer_id.removeprefix("cus_"),
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": "in_" + secrets.token_hex(12),
        "livemode": False,
        "metadata": {"plan": "pro", "seats": "1", "source": "bench"},
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": period_start,
        "status": "active",
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }
    event = {
        "id": event_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {
            "object": subscription,
            "previous_attributes": {"metadata": {"seats": None}},
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_" + secrets.token_hex(7), "idempotency_key": None},
        "type": "customer.subscription.updated",
    }
    return json.dumps(event, separators=(",", ":"))


def webhook_lines(prefix: str, *, count: int) -> list[str]:
    """`count` signed deliveries: unique ids, SUBSCRIPTIONS distinct subscriptions each with
    strictly increasing `created` (they arrive SUBSCRIPTIONS requests apart, so never out
    of order at any concurrency used here)."""
    base = int(time.time()) - 30 * 86400
    now = int(time.time())
    lines = []
    for n in range(count):
        sub = n % SUBSCRIPTIONS
        body = subscription_event(
            f"sub_{prefix}{sub}",
            f"cus_{prefix}{sub % 1000}",
            event_id=f"evt_{prefix}{n}",
            created=base + n // SUBSCRIPTIONS,
        )
        signature = sign(body.encode(), WEBHOOK_SECRET, timestamp=now)
        headers = f"Stripe-Signature: {signature}|Content-Type: application/json"
        lines.append(f"POST\t/webhooks\t{headers}\t{body}")
    return lines


def token(user: str) -> str:
    claims = {"sub": user, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


# --- Databases -----------------------------------------------------------------------


def postgres_base_url() -> str:
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    return url or "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def plain(url: str) -> str:
    """The SQLAlchemy URL as asyncpg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Databases:
    """Scratch databases on the bench's PostgreSQL, dropped by close()."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.tag = secrets.token_hex(3)
        self.created: list[str] = []

    def _admin(self, statement: str) -> None:
        admin = plain(make_url(self.base).set(database="postgres").render_as_string(False))
        run_sql(admin, statement)

    def create(self, name: str, *, migrate: bool) -> str:
        full = f"portal_bench_{name}_{self.tag}"
        self._admin(f'CREATE DATABASE "{full}"')
        self.created.append(full)
        url = make_url(self.base).set(database=full).render_as_string(hide_password=False)
        if migrate:
            migrations.upgrade(url)
        return url

    def close(self) -> None:
        for name in self.created:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_sql(url: str, statement: str, *args: Any) -> Any:
    import asyncio

    async def go() -> Any:
        connection = await asyncpg.connect(plain(url))
        try:
            return await connection.fetchval(statement, *args)
        finally:
            await connection.close()

    return asyncio.run(go())


def count_rows(url: str, table: str, prefix: str) -> int:
    counted: int = run_sql(url, f"SELECT count(*) FROM {table} WHERE id LIKE $1", f"{prefix}%")  # noqa: S608 - our own table names
    return counted


SEED_HISTORY = """
INSERT INTO stripe_events
    (id, type, api_version, created, livemode, account, payload, received_at, status,
     attempts, last_error, processed_at)
SELECT 'evt_hist' || g,
       CASE WHEN g % 3 = 0 THEN 'invoice.paid' ELSE 'customer.subscription.updated' END,
       '2026-10-28.endive',
       now() - make_interval(secs => ($1 - g) * (5184000.0 / $1)),
       false, '',
       jsonb_build_object(
           'id', 'evt_hist' || g, 'object', 'event', 'type', 'customer.subscription.updated',
           'created', extract(epoch FROM now())::bigint - (($1 - g) * (5184000.0 / $1))::bigint,
           'data', jsonb_build_object('object', jsonb_build_object(
               'id', 'sub_hist' || (g % 20000), 'object', 'subscription',
               'customer', 'cus_hist' || (g % 5000), 'status', 'active',
               'metadata', jsonb_build_object('plan', 'pro', 'seats', '1')))),
       now() - make_interval(secs => ($1 - g) * (5184000.0 / $1)),
       CASE WHEN g % 1000 = 0 THEN 'failed' ELSE 'processed' END,
       1, NULL, now() - make_interval(secs => ($1 - g) * (5184000.0 / $1))
FROM generate_series(1, $1) AS g
"""


def seed_history(url: str, count: int) -> float:
    """`count` recorded events spread over the last 60 days (1 in 1000 `failed`), written by
    one statement."""
    import asyncio

    async def go() -> None:
        connection = await asyncpg.connect(plain(url))
        try:
            await connection.execute(SEED_HISTORY, count)
            await connection.execute("ANALYZE stripe_events")
        finally:
            await connection.close()

    started = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - started


SEED_USERS = """
INSERT INTO customers (id, livemode, account, raw, deleted, updated_at, app_user_id, email,
                       preferred_locales)
SELECT 'cus_bench' || g, false, '', '{}'::jsonb, false, now(), 'bench_user' || g,
       'bench' || g || '@example.com', '[]'::jsonb
FROM generate_series(0, $1 - 1) AS g;
"""
SEED_READER = [
    """INSERT INTO subscriptions (id, livemode, account, raw, deleted, updated_at, customer_id,
        status, cancel_at_period_end, collection_method, current_period_start,
        current_period_end)
       VALUES ('sub_bench_reader', false, '', '{}'::jsonb, false, now(), 'cus_bench0',
        'active', false, 'charge_automatically', now() - interval '3 days',
        now() + interval '27 days')""",
    """INSERT INTO subscription_items (id, livemode, account, raw, deleted, updated_at,
        subscription_id, price_id, product_id, quantity, usage_type, tax_behavior, interval,
        current_period_start, current_period_end)
       VALUES ('si_bench_reader', false, '', '{}'::jsonb, false, now(), 'sub_bench_reader',
        'price_bench', 'prod_bench', 1, 'licensed', 'exclusive', 'month',
        now() - interval '3 days', now() + interval '27 days')""",
    """INSERT INTO entitlements (id, livemode, account, raw, deleted, updated_at, customer_id,
        feature_id, lookup_key)
       SELECT 'ent_bench' || g, false, '', '{}'::jsonb, false, now(), 'cus_bench0',
        'feat_' || g, 'feature-' || g FROM generate_series(0, 2) AS g""",
]


def seed_users(url: str) -> None:
    import asyncio

    async def go() -> None:
        connection = await asyncpg.connect(plain(url))
        try:
            await connection.execute(SEED_USERS, PORTAL_USERS)
            for statement in SEED_READER:
                await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(go())


# --- Cases ---------------------------------------------------------------------------


class Bench:
    def __init__(self, mode: Mode, tool: str) -> None:
        self.mode, self.tool = mode, tool
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self._serial = 0

    def prefix(self) -> str:
        self._serial += 1
        return f"b{self._serial}x{secrets.token_hex(2)}_"

    def webhooks(
        self, server: Server, database_url: str, table: str, *, connections: int, warm: bool
    ) -> Run:
        if warm:
            warm_prefix = self.prefix()
            lines = webhook_lines(warm_prefix, count=EVENTS_PER_SECOND_CAP * self.mode.warmup)
            wrk(
                self.tool,
                server,
                lines,
                connections=connections,
                duration=self.mode.warmup,
            )
        prefix = self.prefix()
        lines = webhook_lines(prefix, count=EVENTS_PER_SECOND_CAP * self.mode.duration)
        run = wrk(
            self.tool,
            server,
            lines,
            connections=connections,
            duration=self.mode.duration,
            expect='"status":"processed"',
        )
        run.rows = count_rows(database_url, table, "evt_" + prefix)
        return run

    def alternate(
        self,
        pairs: Sequence[tuple[Row, Any]],
    ) -> None:
        """Round after round, each (row, measure) in turn; measure(first) -> Run."""
        for round_ in range(self.mode.rounds):
            for row, measure in pairs:
                row.runs.append(measure(round_ == 0))

    def intake(self, dbs: Databases, service_url: str) -> Server:
        base_url = dbs.create("baseline", migrate=False)
        baseline = Server(
            "baseline",
            uvicorn_argv("bench.baseline:intake_app", port := free_port()),
            {"BASELINE_DATABASE_URL": plain(base_url), "BASELINE_WEBHOOK_SECRET": WEBHOOK_SECRET},
            port,
        )
        service = start_service("service", service_url)
        try:
            for connections in (16, 32):
                base_row = Row(f"POST /webhooks, {connections} connections", "baseline endpoint")
                svc_row = Row(f"POST /webhooks, {connections} connections", "portal-service")
                svc_row.vs = base_row
                if connections == 32:
                    svc_row.target_note = ">= 0.6x (stretch 0.8x), p99 < 50 ms, no errors"
                self.alternate(
                    [
                        (
                            base_row,
                            lambda warm, c=connections: self.webhooks(
                                baseline, base_url, "baseline_events", connections=c, warm=warm
                            ),
                        ),
                        (
                            svc_row,
                            lambda warm, c=connections: self.webhooks(
                                service, service_url, "stripe_events", connections=c, warm=warm
                            ),
                        ),
                    ]
                )
                base_row.rss_mb, svc_row.rss_mb = baseline.rss_mb(), service.rss_mb()
                self.rows += [base_row, svc_row]
        finally:
            baseline.stop()
        return service

    def history(self, dbs: Databases, service: Server, service_url: str) -> None:
        url = dbs.create("history", migrate=True)
        seconds = seed_history(url, self.mode.history)
        self.notes.append(
            f"History: {self.mode.history:,} events recorded with one generate_series INSERT "
            f"in {seconds:.0f} s (about 0.4 KB of payload each), then ANALYZE."
        )
        recorded = run_sql(service_url, "SELECT count(*) FROM stripe_events")
        with_history = start_service("service-history", url)
        try:
            now_row = Row("POST /webhooks, 32 connections, short history", "portal-service")
            now_row.note = f"{recorded:,} events recorded before"
            hist_row = Row(
                f"POST /webhooks, 32 connections, {self.mode.history:,} events recorded",
                "portal-service",
            )
            hist_row.vs = now_row
            hist_row.target_note = ">= 0.8x"
            self.alternate(
                [
                    (
                        now_row,
                        lambda warm: self.webhooks(
                            service, service_url, "stripe_events", connections=32, warm=warm
                        ),
                    ),
                    (
                        hist_row,
                        lambda warm: self.webhooks(
                            with_history, url, "stripe_events", connections=32, warm=warm
                        ),
                    ),
                ]
            )
            now_row.rss_mb, hist_row.rss_mb = service.rss_mb(), with_history.rss_mb()
            self.rows += [now_row, hist_row]
            self.rows.append(self.prune_under_load(with_history, url))
        finally:
            with_history.stop()

    def prune_under_load(self, server: Server, url: str) -> Row:
        """`portal-service prune --older-than 30` on the history while intake runs beside it."""
        before = run_sql(url, "SELECT count(*) FROM stripe_events")
        env = service_env(url)
        started = time.perf_counter()
        pruning = subprocess.Popen(  # noqa: S603 - our own command
            [str(BIN / "portal-service"), "prune", "--older-than", "30"],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        row = Row("POST /webhooks, 32 connections, during prune --older-than 30", "portal-service")
        row.target_note = "prune never locks intake out"
        runs = 0
        while pruning.poll() is None or runs == 0:
            row.runs.append(self.webhooks(server, url, "stripe_events", connections=32, warm=False))
            runs += 1
        output, _ = pruning.communicate(timeout=600)
        seconds = time.perf_counter() - started
        words = output.split()
        deleted = int(words[1]) if len(words) > 1 and words[1].isdigit() else -1
        row.rss_mb = server.rss_mb()
        row.note = (
            f"prune deleted {deleted:,} of {before:,} events in {seconds:.0f} s "
            f"({deleted / seconds:,.0f}/s, batches of 1000, exit {pruning.returncode}); "
            f"{runs} intake run(s) during it"
        )
        return row

    def workers(self, service: Server, service_url: str) -> None:
        two = start_service("service-2-workers", service_url, workers=2)
        try:
            one_row = Row("POST /webhooks, 32 connections, serve --workers 1", "portal-service")
            two_row = Row("POST /webhooks, 32 connections, serve --workers 2", "portal-service")
            two_row.vs = one_row
            two_row.target_note = "scales (factor reported)"
            self.alternate(
                [
                    (
                        one_row,
                        lambda warm: self.webhooks(
                            service, service_url, "stripe_events", connections=32, warm=warm
                        ),
                    ),
                    (
                        two_row,
                        lambda warm: self.webhooks(
                            two, service_url, "stripe_events", connections=32, warm=warm
                        ),
                    ),
                ]
            )
            one_row.rss_mb, two_row.rss_mb = service.rss_mb(), two.rss_mb()
            self.rows += [one_row, two_row]
        finally:
            two.stop()

    def get(self, server: Server, path: str, headers: str, *, expect: str, warm: bool) -> Run:
        lines = [f"GET\t{path}\t{headers}\t"]
        if warm:
            wrk(self.tool, server, lines, connections=16, duration=self.mode.warmup)
        return wrk(
            self.tool, server, lines, connections=16, duration=self.mode.duration, expect=expect
        )

    def entitlements(self, service: Server, service_url: str) -> None:
        hello = Server(
            "hello", uvicorn_argv("bench.baseline:hello_app", port := free_port()), {}, port
        )
        reader = Server(
            "one-read endpoint",
            uvicorn_argv("bench.baseline:read_app", port := free_port()),
            {"BASELINE_DATABASE_URL": plain(service_url), "BASELINE_JWT_SECRET": JWT_SECRET},
            port,
        )
        try:
            hello_row = Row("GET hello world, 16 connections", "FastAPI hello world")
            read_row = Row("GET one-read endpoint, 16 connections", "JWT + one SELECT")
            read_row.vs = hello_row
            ent_row = Row("GET /me/entitlements, 16 connections", "portal-service")
            ent_row.vs = hello_row
            ent_row.target_note = ">= 0.4x"
            auth = f"Authorization: Bearer {token('bench_user0')}"
            self.alternate(
                [
                    (hello_row, lambda warm: self.get(hello, "/", "", expect="Hello", warm=warm)),
                    (
                        read_row,
                        lambda warm: self.get(
                            reader,
                            "/me/entitlements",
                            auth,
                            expect='"has_access":true',
                            warm=warm,
                        ),
                    ),
                    (
                        ent_row,
                        lambda warm: self.get(
                            service,
                            "/me/entitlements",
                            auth,
                            expect='"has_access":true',
                            warm=warm,
                        ),
                    ),
                ]
            )
            hello_row.rss_mb, read_row.rss_mb = hello.rss_mb(), reader.rss_mb()
            ent_row.rss_mb = service.rss_mb()
            if read_row.rate:
                ent_row.note = f"{ent_row.rate / read_row.rate:.2f}x the one-read endpoint"
            self.rows += [hello_row, read_row, ent_row]
        finally:
            hello.stop()
            reader.stop()

    def portal_sessions(self, service_url: str) -> None:
        fake = Server(
            "fake-stripe",
            uvicorn_argv("bench.fake_stripe:fake_stripe_app", port := free_port()),
            {"FAKE_STRIPE_LATENCY_MS": "50"},
            port,
        )
        bare = Server(
            "bare SDK endpoint",
            uvicorn_argv("bench.baseline:portal_app", port := free_port()),
            {"BASELINE_JWT_SECRET": JWT_SECRET, "BASELINE_STRIPE_API_BASE": fake.url},
            port,
        )
        service = start_service(
            "service-online",
            service_url,
            STRIPE_API_KEY=STRIPE_KEY,
            STRIPE_API_BASE=fake.url,
            STRIPE_MAX_NETWORK_RETRIES="0",
        )
        try:
            lines = [
                f"POST\t/portal-sessions\tAuthorization: Bearer {token(f'bench_user{n}')}"
                f"|Content-Type: application/json\t{{}}"
                for n in range(PORTAL_USERS)
            ]
            fake_lines = [
                "POST\t/v1/billing_portal/sessions\tContent-Type: application/x-www-form-urlencoded"
                "\tcustomer=cus_bench0&return_url=https%3A%2F%2Fapp.example.com%2Faccount"
            ]

            def measure(server: Server, requests: list[str], connections: int, warm: bool) -> Run:
                if warm:
                    wrk(self.tool, server, requests, connections=connections, duration=1)
                return wrk(
                    self.tool,
                    server,
                    requests,
                    connections=connections,
                    duration=self.mode.duration,
                    expect='"url"',
                )

            # Overhead with one request at a time (no queueing), throughput at 64 users.
            for connections, label in (
                (1, "1 user at a time"),
                (PORTAL_USERS, f"{PORTAL_USERS} users"),
            ):
                fake_row = Row(f"fake Stripe alone, {label}", "fake Stripe (50 ms)")
                bare_row = Row(f"bare SDK endpoint, {label}", "JWT + the SDK's call")
                row = Row(f"POST /portal-sessions, {label}", "portal-service")
                bare_row.vs = row.vs = fake_row
                if connections == 1:
                    row.target_note = "overhead < 3 ms p50"
                self.alternate(
                    [
                        (fake_row, lambda warm, c=connections: measure(fake, fake_lines, c, warm)),
                        (bare_row, lambda warm, c=connections: measure(bare, lines, c, warm)),
                        (row, lambda warm, c=connections: measure(service, lines, c, warm)),
                    ]
                )
                row.rss_mb = service.rss_mb()
                bare_row.note = (
                    f"beyond the fake measured alone: p50 {bare_row.p50 - fake_row.p50:+.1f} ms, "
                    f"p99 {bare_row.p99 - fake_row.p99:+.1f} ms"
                )
                row.note = (
                    f"beyond the fake's nominal 50 ms: p50 {row.p50 - 50:+.1f} ms, "
                    f"p99 {row.p99 - 50:+.1f} ms; beyond the fake measured alone: p50 "
                    f"{row.p50 - fake_row.p50:+.1f} ms, p99 {row.p99 - fake_row.p99:+.1f} ms; "
                    f"beyond the bare SDK endpoint: p50 {row.p50 - bare_row.p50:+.1f} ms"
                )
                self.rows += [fake_row, bare_row, row]
        finally:
            service.stop()
            bare.stop()
            fake.stop()

    def sync(self, dbs: Databases) -> None:
        count = self.mode.sync_objects
        url = dbs.create("sync", migrate=True)
        fake = Server(
            "fake-stripe-lists",
            uvicorn_argv("bench.fake_stripe:fake_stripe_app", port := free_port()),
            {"FAKE_STRIPE_PAGE_LATENCY_MS": "20", "FAKE_STRIPE_OBJECTS": str(count)},
            port,
        )
        try:
            env = service_env(url, STRIPE_API_KEY=STRIPE_KEY, STRIPE_API_BASE=fake.url)
            started = time.perf_counter()
            subprocess.run(  # noqa: S603 - our own command
                [str(BIN / "portal-service"), "sync", "--only", "customers,subscriptions"],
                env={**os.environ, **env},
                cwd=ROOT,
                check=True,
                capture_output=True,
                timeout=600,
            )
            seconds = time.perf_counter() - started
            written = run_sql(
                url,
                "SELECT (SELECT count(*) FROM customers) + (SELECT count(*) FROM subscriptions)",
            )
        finally:
            fake.stop()
        pages = 2 * -(-count // 100)
        row = Row(f"portal-service sync, {2 * count:,} objects", "portal-service")
        row.runs.append(
            Run(
                requests=written,
                seconds=seconds,
                errors=0,
                non_2xx=0,
                unexpected=2 * count - written,
                p50_ms=0.0,
                p99_ms=0.0,
                rows=written,
            )
        )
        row.note = (
            f"objects/s over the command's wall time (start-up included); {pages} pages of "
            f"100 at 20 ms each = {pages * 0.02:.1f} s of it waiting on the fake"
        )
        self.rows.append(row)


# --- Report --------------------------------------------------------------------------


def machine() -> str:
    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU ({model}), Python {platform.python_version()}, "
        f"{platform.system()}; load average at the end {load}"
    )


def revision() -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        head = subprocess.run(  # noqa: S603
            [git, "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            [git, "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head} + uncommitted changes" if dirty else head


def render(bench: Bench, *, command: str, elapsed: float) -> str:
    lines = [
        f"Run `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, revision {revision()}, "
        f"{machine()}; took {elapsed:.0f} s; wrk -t1, {bench.mode.duration} s per run, "
        f"{bench.mode.rounds} alternating round(s) per case.",
        "",
        "| case | target | requests/s | ratio | server CPU ms/request | p50 ms | p99 ms | errors "
        "| acknowledged | rows written | peak RSS MB | target | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in bench.rows:
        ratio = ""
        if row.vs is not None and row.vs.rate:
            ratio = f"{row.rate / row.vs.rate:.2f}x"
        rows = "" if row.rows is None else f"{row.rows:,}"
        rss = "" if row.rss_mb is None else f"{row.rss_mb:.0f}"
        cpu = f"{row.cpu_ms:.2f}" if row.cpu_ms else ""
        latency = (f"{row.p50:.1f}", f"{row.p99:.1f}") if row.p50 else ("", "")
        lines.append(
            f"| {row.case} | {row.target} | {row.rate:,.0f} | {ratio} | {cpu} | "
            f"{latency[0]} | "
            f"{latency[1]} | {row.errors} | {row.acknowledged:,} | {rows} | {rss} | "
            f"{row.target_note} | {row.note} |"
        )
    lines += ["", *bench.notes]
    return "\n".join(lines) + "\n"


def write_readme(report: str) -> None:
    current = README.read_text()
    start, end = current.index(START_MARK), current.index(END_MARK)
    README.write_text(current[: start + len(START_MARK)] + "\n" + report + current[end:])


CASES = ("intake", "history", "workers", "entitlements", "portal", "sync")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs; README untouched")
    parser.add_argument("--no-write", action="store_true", help="print only; README untouched")
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    only = set(args.only.split(","))
    tool = ensure_wrk()
    started = time.perf_counter()
    bench = Bench(mode, tool)
    dbs = Databases(postgres_base_url())
    try:
        service_url = dbs.create("service", migrate=True)
        seed_users(service_url)
        service = (
            bench.intake(dbs, service_url)
            if "intake" in only
            else start_service("service", service_url)
        )
        try:
            if "history" in only:
                bench.history(dbs, service, service_url)
            if "workers" in only:
                bench.workers(service, service_url)
            if "entitlements" in only:
                bench.entitlements(service, service_url)
        finally:
            service.stop()
        if "portal" in only:
            bench.portal_sessions(service_url)
        if "sync" in only:
            bench.sync(dbs)
    finally:
        dbs.close()
    elapsed = time.perf_counter() - started
    command = "make bench" if not args.quick else "bench/run.py --quick"
    if args.only != ",".join(CASES):
        command += f" --only {args.only}"
    report = render(bench, command=command, elapsed=elapsed)
    sys.stdout.write(report)
    if not (args.quick or args.no_write):
        write_readme(report)
        sys.stdout.write(f"\nwritten to {README.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
