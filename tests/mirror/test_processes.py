"""Real processes: `portal-service replay`, and two `portal-service serve` sharing one
PostgreSQL database under concurrent deliveries (ARCHITECTURE.md, "Webhook processing")."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mirror.stripe_payloads import item, subscription, utc
from portal_service import cli
from portal_service.mirror.tables import StripeEvent, Subscription, SubscriptionItem
from support import ADMIN_KEY, WEBHOOK_SECRET, deliver, make_event, signed_headers

T0 = 1_760_000_000
CLI = str(Path(sys.executable).with_name("portal-service"))


def service_env(database_url: str) -> dict[str, str]:
    # Built from scratch so nothing of the developer's environment (a Stripe key) leaks in.
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "ADMIN_API_KEYS": ADMIN_KEY,
        "LOG_LEVEL": "WARNING",
    }


async def run_cli(database_url: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        env=service_env(database_url),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def unpaid_event(sub_id: str) -> dict[str, Any]:
    return make_event(
        "customer.subscription.updated", subscription(sub_id, status="unpaid"), created=T0
    )


@pytest.mark.sqlite
@pytest.mark.slow
class TestReplayCommand:
    async def test_replays_failed_events_once_the_fault_is_gone(
        self,
        client: httpx.AsyncClient,
        rows: Any,
        database_url: str,
        tmp_path: Path,
        refuse_subscription_status: Callable[[str], Any],
    ) -> None:
        events = [unpaid_event("sub_a"), unpaid_event("sub_b")]
        async with refuse_subscription_status("unpaid"):
            for event in events:
                assert (await deliver(client, event)).status_code == 500
            still_failing = await run_cli(database_url, tmp_path, "replay")
        assert still_failing[0] == 1
        assert "failed 2" in still_failing[1]
        assert {(await rows.event(e["id"])).attempts for e in events} == {2}

        code, stdout, stderr = await run_cli(database_url, tmp_path, "replay", "--status", "failed")
        assert code == 0, stderr
        assert "replayed 2 event(s): processed 2" in stdout
        for event in events:
            assert (await rows.event(event["id"])).status == "processed"
        assert (await rows.get(Subscription, "sub_a")).status == "unpaid"

    async def test_named_events_are_replayed_whatever_their_status(
        self, client: httpx.AsyncClient, database_url: str, tmp_path: Path
    ) -> None:
        event = make_event("customer.subscription.created", subscription())
        await deliver(client, event)
        code, stdout, stderr = await run_cli(
            database_url, tmp_path, "replay", "--event", event["id"], "--event", "evt_missing"
        )
        assert code == 1
        assert "processed 1" in stdout
        assert "not recorded: evt_missing" in stderr

    def test_unknown_status_is_refused(self) -> None:
        result = CliRunner().invoke(cli.app, ["replay", "--status", "done"])
        assert result.exit_code == 2
        assert "--status must be one of" in result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def serving(database_url: str, tmp_path: Path, count: int) -> AsyncIterator[list[str]]:
    """`count` real service processes on loopback ports; their output goes to files."""
    processes: list[asyncio.subprocess.Process] = []
    logs: list[Path] = []
    urls: list[str] = []
    try:
        for n in range(count):
            port = free_port()
            log = tmp_path / f"serve-{n}.log"
            with log.open("wb") as sink:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        CLI,
                        "serve",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        env=service_env(database_url),
                        cwd=tmp_path,
                        stdout=sink,
                        stderr=sink,
                    )
                )
            logs.append(log)
            urls.append(f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(timeout=2) as http:
            for url, process, log in zip(urls, processes, logs, strict=True):
                for _ in range(300):
                    if process.returncode is not None:
                        pytest.fail(f"{url} exited: {log.read_text()[-2000:]}")
                    try:
                        if (await http.get(f"{url}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"{url} never became healthy: {log.read_text()[-2000:]}")
        yield urls
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def post_event(http: httpx.AsyncClient, url: str, event: dict[str, Any]) -> httpx.Response:
    body = json.dumps(event).encode()
    return await http.post(f"{url}/webhooks", content=body, headers=signed_headers(body))


@pytest.mark.slow
class TestTwoProcesses:
    async def test_two_processes_apply_each_event_once_and_keep_the_newest_state(
        self, engine: Any, rows: Any, database_url: str, tmp_path: Path
    ) -> None:
        subscriptions, versions = 20, 6
        events = [
            make_event(
                "customer.subscription.updated",
                subscription(
                    f"sub_{s}",
                    status="active" if v % 2 else "past_due",
                    items=[item(f"si_{s}_{v}", subscription_id=f"sub_{s}", quantity=v + 1)],
                    metadata={"v": str(v)},
                ),
                created=T0 + v,
            )
            for s in range(subscriptions)
            for v in range(versions)
        ]
        once = make_event("customer.subscription.created", subscription("sub_once"), created=T0)
        async with serving(database_url, tmp_path, 2) as urls:
            # Every event goes to both processes; one event 30 times, alternating.
            deliveries = [(url, event) for event in events for url in urls]
            deliveries += [(urls[n % 2], once) for n in range(30)]
            random.Random(3).shuffle(deliveries)
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(timeout=60, limits=limits) as http:
                responses = await asyncio.gather(
                    *(post_event(http, url, event) for url, event in deliveries)
                )
        assert {r.status_code for r in responses} == {200}, [
            r.text for r in responses if r.status_code != 200
        ][:3]
        assert await rows.count(StripeEvent) == len(events) + 1
        assert {e.status for e in await rows.all(StripeEvent)} == {"processed"}
        recorded = await rows.event(once["id"])
        assert recorded.attempts == 1
        once_statuses = [
            r.json()["status"] for (_, e), r in zip(deliveries, responses, strict=True) if e is once
        ]
        assert sorted(once_statuses) == ["duplicate"] * 29 + ["processed"]
        newest = versions - 1
        for s in range(subscriptions):
            row = await rows.get(Subscription, f"sub_{s}")
            assert (row.raw["metadata"], row.source_ts) == ({"v": str(newest)}, utc(T0 + newest))
            (only,) = await rows.all(SubscriptionItem, subscription_id=f"sub_{s}")
            assert only.quantity == versions
