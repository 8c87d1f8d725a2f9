"""The notification machinery of one service process: started in the lifespan only when
NOTIFY_URL is set, stopped cleanly on shutdown."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal_service.config import Settings
from portal_service.mirror.observers import APPLY_OBSERVER
from portal_service.notify.delivery import Backoff, DeliveryLoop
from portal_service.notify.outbox import Outbox, OutboxConfig, policy_of
from portal_service.notify.scheduler import AccessUntilScheduler
from portal_service.ops.logging import get_logger

log = get_logger("portal_service.notify")
# How long shutdown waits for an in-flight delivery before cancelling it (its lease then
# expires and another process, or the next start, delivers it).
_STOP_GRACE_SECONDS = 5.0


class Notifier:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        poll_interval: float = 1.0,
        scheduler_interval: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        # Settings.check refuses NOTIFY_URL without NOTIFY_SECRET.
        assert settings.notify_url is not None  # noqa: S101
        assert settings.notify_secret is not None  # noqa: S101
        self.delivery = DeliveryLoop(
            sessionmaker,
            url=settings.notify_url,
            secret=settings.notify_secret.get_secret_value(),
            timeout=settings.notify_timeout,
            poll_interval=poll_interval,
            backoff=backoff,
        )
        self.scheduler = AccessUntilScheduler(
            sessionmaker,
            OutboxConfig(
                policy=policy_of(settings),
                coalesce=timedelta(seconds=settings.notify_coalesce_seconds),
            ),
            interval=scheduler_interval,
        )
        self._sessionmaker = sessionmaker
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        outbox = self._sessionmaker.kw.get("info", {}).get(APPLY_OBSERVER)
        if isinstance(outbox, Outbox):
            outbox.on_written = self.delivery.wake
        self._tasks = [
            asyncio.create_task(self.delivery.run(self._stop), name="notify-delivery"),
            asyncio.create_task(self.scheduler.run(self._stop), name="notify-scheduler"),
        ]
        log.info("notify_started")

    async def stop(self) -> None:
        self._stop.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=_STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
