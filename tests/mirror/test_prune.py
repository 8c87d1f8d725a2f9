"""`portal-service prune --older-than DAYS`: old processed and ignored events go, failed and
pending ones stay, in batches that never wait on a row intake holds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from mirror.stripe_payloads import subscription
from portal_service.db import create_sessionmaker, utcnow
from portal_service.mirror.prune import prune_events
from portal_service.mirror.tables import StripeEvent
from support import deliver, make_event

PORTAL_SERVICE = str(Path(sys.executable).with_name("portal-service"))


async def record(engine: AsyncEngine, event_id: str, *, status: str, age_days: float) -> None:
    received = utcnow() - timedelta(days=age_days)
    async with create_sessionmaker(engine)() as session:
        session.add(
            StripeEvent(
                id=event_id,
                type="customer.updated",
                created=received,
                payload={"id": event_id, "object": "event"},
                received_at=received,
                status=status,
            )
        )
        await session.commit()


async def remaining(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set((await connection.execute(select(StripeEvent.id))).scalars())  # type: ignore[call-overload]


@pytest.mark.sqlite
class TestPruneEvents:
    async def test_old_processed_and_ignored_go_failed_pending_and_recent_stay(
        self, engine: AsyncEngine
    ) -> None:
        for status in ("processed", "ignored", "failed", "pending"):
            await record(engine, f"evt_old_{status}", status=status, age_days=40)
            await record(engine, f"evt_new_{status}", status=status, age_days=10)

        deleted = await prune_events(create_sessionmaker(engine), older_than=timedelta(days=30))

        assert deleted == 2
        assert await remaining(engine) == {
            "evt_old_failed",
            "evt_old_pending",
            "evt_new_processed",
            "evt_new_ignored",
            "evt_new_failed",
            "evt_new_pending",
        }

    async def test_deletes_in_batches_each_committed(self, engine: AsyncEngine) -> None:
        for n in range(7):
            await record(engine, f"evt_batch_{n}", status="processed", age_days=5 + n)
        commits: list[int] = []

        def committed(_connection: Any) -> None:
            commits.append(1)

        event.listen(engine.sync_engine, "commit", committed)
        try:
            deleted = await prune_events(
                create_sessionmaker(engine), older_than=timedelta(days=1), batch_size=3
            )
        finally:
            event.remove(engine.sync_engine, "commit", committed)
        assert deleted == 7
        assert await remaining(engine) == set()
        # 3 + 3 + 1: three batches, each its own transaction.
        assert len(commits) == 3

    async def test_nothing_old_enough_deletes_nothing(self, engine: AsyncEngine) -> None:
        await record(engine, "evt_young", status="processed", age_days=2)
        deleted = await prune_events(create_sessionmaker(engine), older_than=timedelta(days=3))
        assert deleted == 0
        assert await remaining(engine) == {"evt_young"}

    async def test_intake_works_on_while_and_after_pruning(
        self, engine: AsyncEngine, client: Any
    ) -> None:
        for n in range(50):
            await record(engine, f"evt_bulk_{n}", status="processed", age_days=60)
        obj = subscription("sub_prune", customer="cus_prune")
        pruning = asyncio.create_task(
            prune_events(create_sessionmaker(engine), older_than=timedelta(days=30), batch_size=5)
        )
        delivered = await deliver(client, make_event("customer.subscription.updated", obj))
        assert await pruning == 50
        assert delivered.status_code == 200
        assert delivered.json()["status"] == "processed"
        assert len(await remaining(engine)) == 1


class TestPruneSkipsLockedRows:
    async def test_a_row_held_by_another_transaction_is_skipped_not_waited_for(
        self, engine: AsyncEngine
    ) -> None:
        await record(engine, "evt_held", status="processed", age_days=40)
        await record(engine, "evt_free", status="processed", age_days=40)
        async with engine.connect() as holder:
            # What a redelivery of evt_held does while it is being looked at (intake's FOR UPDATE).
            await holder.execute(
                text("SELECT id FROM stripe_events WHERE id = 'evt_held' FOR UPDATE")
            )
            deleted = await asyncio.wait_for(
                prune_events(create_sessionmaker(engine), older_than=timedelta(days=30)),
                timeout=10,
            )
            await holder.rollback()
        assert deleted == 1
        assert await remaining(engine) == {"evt_held"}


@pytest.mark.sqlite
@pytest.mark.slow
class TestPruneCommand:
    async def test_prune_command_reports_what_it_deleted(
        self, engine: AsyncEngine, database_url: str, tmp_path: Path
    ) -> None:
        await record(engine, "evt_cli_old", status="processed", age_days=8)
        await record(engine, "evt_cli_failed", status="failed", age_days=8)
        env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url}
        done = await asyncio.to_thread(
            subprocess.run,
            [PORTAL_SERVICE, "prune", "--older-than", "7"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "pruned 1 event(s) received more than 7 day(s) ago"
        assert await remaining(engine) == {"evt_cli_failed"}

    def test_older_than_is_required_and_positive(self, tmp_path: Path) -> None:
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
        missing = run(
            [PORTAL_SERVICE, "prune"], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        zero = run(
            [PORTAL_SERVICE, "prune", "--older-than", "0"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 2
        assert "--older-than" in missing.stderr
        assert zero.returncode == 2
