"""Two real `portal-service serve` processes on one PostgreSQL database, both delivering
notifications to one receiver: no notification is ever delivered twice, each customer's
arrive in order, and every change is told."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mirror.test_processes import CLI, free_port, post_event, service_env
from notify.receiver import NOTIFY_SECRET, Receiver
from notify.support import T0, customer_created, notifications, subscribed


@asynccontextmanager
async def serving(env: dict[str, str], tmp_path: Path, count: int) -> AsyncIterator[list[str]]:
    processes: list[asyncio.subprocess.Process] = []
    urls: list[str] = []
    logs: list[Path] = []
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
                        env=env,
                        cwd=tmp_path,
                        stdout=sink,
                        stderr=sink,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
            logs.append(log)
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


def logged_deliveries(folder: Path) -> list[str]:
    """Ids of the notifications the service processes logged as delivered."""
    return [
        json.loads(line)["notification_id"]
        for log in folder.glob("serve-*.log")
        for line in log.read_text().splitlines()
        if '"notification_delivery"' in line and '"result": "delivered"' in line
    ]


@pytest.mark.slow
class TestTwoProcesses:
    async def test_two_processes_never_deliver_one_notification_twice(
        self, engine: AsyncEngine, database_url: str, receiver: Receiver, tmp_path: Path
    ) -> None:
        customers = 16
        events: list[dict[str, Any]] = []
        for n in range(customers):
            events += [
                customer_created(f"cus_{n}"),
                subscribed(f"cus_{n}", f"sub_{n}", created=T0 + 1),
            ]
            if n % 2:
                events.append(subscribed(f"cus_{n}", f"sub_{n}", created=T0 + 2, status="canceled"))
        env = {
            **service_env(database_url),
            "NOTIFY_URL": receiver.url,
            "NOTIFY_SECRET": NOTIFY_SECRET,
            "NOTIFY_COALESCE_SECONDS": "0",
            "LOG_LEVEL": "INFO",
        }
        async with serving(env, tmp_path, 2) as urls:
            # Every event to both processes, in a shuffled order, concurrently.
            deliveries = [(url, event) for event in events for url in urls]
            random.Random(12).shuffle(deliveries)
            async with httpx.AsyncClient(timeout=60) as http:
                responses = await asyncio.gather(
                    *(post_event(http, url, event) for url, event in deliveries)
                )
            assert {r.status_code for r in responses} == {200}
            for _ in range(200):
                rows = await notifications(engine)
                if rows and {r.status for r in rows} == {"delivered"}:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # time for a second delivery, if there were to be one
        rows = await notifications(engine)
        assert {r.status for r in rows} == {"delivered"}
        received = receiver.ids()
        assert len(received) == len(set(received)), "a notification was delivered twice"
        assert sorted(received) == sorted(r.id for r in rows)
        order = {r.id: (r.customer_id, r.seq) for r in rows}
        for n in range(customers):
            told = [order[i][1] for i in received if order[i][0] == f"cus_{n}"]
            assert told == sorted(told), f"cus_{n} told out of order"
            last = [r for r in rows if r.customer_id == f"cus_{n}"]
            if n % 2:
                assert len(last) in (0, 2)
                assert not last or last[-1].current["has_access"] is False
            else:
                assert [r.current["has_access"] for r in last] == [True]
        assert len(rows) >= customers // 2
        # The senders' side agrees: each notification logged as delivered once, by one of them.
        assert sorted(logged_deliveries(tmp_path)) == sorted(received)
