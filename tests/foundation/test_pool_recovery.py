"""The pool without pre-ping (db.py): after PostgreSQL ends every backend of the service's
database, the next webhook and the next /readyz succeed without restarting the app. The
same for webhook intake's own asyncpg pool (mirror/intake_pool.py `open_pool`): its fast path
answers the next event on a fresh connection.

Only the backends of this run's own test database are terminated (filtered by datname).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from mirror.stripe_payloads import subscription
from portal_service.mirror.intake import EventProcessor
from support import deliver, make_event

_OTHER_BACKENDS = (
    "SELECT pid FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def _terminate_other_backends(engine: AsyncEngine) -> set[int]:
    """End every other connection to the test database; return once they are gone."""
    # Autocommit: pg_stat_activity is a snapshot taken once per transaction.
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        killed = set(
            (
                await connection.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity, "
                        "LATERAL pg_terminate_backend(pid) AS done "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND done"
                    )
                )
            ).scalars()
        )
        for _ in range(200):
            alive = set((await connection.execute(text(_OTHER_BACKENDS))).scalars())
            if not killed & alive:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"backends {killed & alive} survived pg_terminate_backend")
    return killed


async def _seen_closed(connections: list[Any]) -> bool:
    """Whether asyncpg notices, within 10 s, that each connection was closed: a backend
    leaves pg_stat_activity a moment before its socket is closed."""
    for _ in range(1000):
        if all(c.is_closed() for c in connections):
            return True
        await asyncio.sleep(0.01)
    return False


class TestPoolRecovery:
    async def test_webhook_and_readyz_succeed_after_backends_are_terminated(
        self, engine: AsyncEngine, client_factory: Callable[..., Any]
    ) -> None:
        async with client_factory() as client:
            app_engine: AsyncEngine = client.app.state.engine  # type: ignore[attr-defined]
            returned: dict[int, Any] = {}

            def checked_in(dbapi_connection: Any, _record: Any) -> None:
                returned[id(dbapi_connection)] = dbapi_connection.driver_connection

            # Fill the app's pool with several connections, all idle afterwards.
            event.listen(app_engine.sync_engine, "checkin", checked_in)
            first = await asyncio.gather(
                *(
                    deliver(
                        client,
                        make_event(
                            "customer.subscription.updated",
                            subscription(f"sub_pool_{n}", customer="cus_pool"),
                        ),
                    )
                    for n in range(4)
                )
            )
            assert [r.status_code for r in first] == [200] * 4
            assert (await client.get("/readyz")).status_code == 200
            event.remove(app_engine.sync_engine, "checkin", checked_in)
            pooled = app_engine.pool.checkedin()  # type: ignore[attr-defined]
            assert pooled >= 1
            assert len(returned) >= pooled

            killed = await _terminate_other_backends(engine)
            assert len(killed) >= pooled
            assert await _seen_closed(list(returned.values()))

            after = await deliver(
                client,
                make_event(
                    "customer.subscription.updated",
                    subscription("sub_pool_after", customer="cus_pool"),
                ),
            )
            ready = await client.get("/readyz")

        assert after.status_code == 200
        assert after.json() == {"received": True, "status": "processed"}
        assert ready.status_code == 200
        assert ready.json()["database"] == "ok"
        async with engine.connect() as connection:
            applied = await connection.scalar(
                text("SELECT count(*) FROM subscriptions WHERE id = 'sub_pool_after'")
            )
        assert applied == 1

    async def test_asyncpg_sees_a_terminated_backend_without_a_round_trip(
        self, engine: AsyncEngine, client_factory: Callable[..., Any]
    ) -> None:
        """What the checkout check relies on: the connection knows it is closed as soon as the
        server ended it, before anything is sent on it."""
        async with client_factory() as client:
            app_engine: AsyncEngine = client.app.state.engine  # type: ignore[attr-defined]
            async with app_engine.connect() as connection:
                raw = await connection.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                assert not driver.is_closed()
                await _terminate_other_backends(engine)
                assert await _seen_closed([driver])

    async def test_the_intake_pool_recovers_and_its_fast_path_answers(
        self, engine: AsyncEngine, client_factory: Callable[..., Any], monkeypatch: Any
    ) -> None:
        """Every delivery below is answered by the fast path on the intake pool: the general
        path, which would otherwise answer an event the fast path hands on, fails the test."""

        async def no_general_path(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError("the event went to the general path")

        monkeypatch.setattr(EventProcessor, "receive", no_general_path)
        async with client_factory() as client:
            intake_pool: Any = client.app.state.intake_pool  # type: ignore[attr-defined]
            assert intake_pool is not None
            pool = intake_pool.pool
            first = await asyncio.gather(
                *(
                    deliver(
                        client,
                        make_event(
                            "customer.subscription.updated",
                            subscription(f"sub_ipool_{n}", customer="cus_ipool"),
                        ),
                    )
                    for n in range(4)
                )
            )
            assert [r.status_code for r in first] == [200] * 4
            opened = [h._con for h in pool._holders if h._con is not None]
            assert opened
            assert pool.get_idle_size() == len(opened)  # every one back in the pool

            killed = await _terminate_other_backends(engine)
            assert len(killed) >= len(opened)
            assert await _seen_closed(opened)

            after = [
                await deliver(
                    client,
                    make_event(
                        "customer.subscription.updated",
                        subscription(f"sub_ipool_after_{n}", customer="cus_ipool"),
                    ),
                )
                for n in range(len(opened) + 1)
            ]

        assert [r.status_code for r in after] == [200] * len(after)
        assert {r.json()["status"] for r in after} == {"processed"}
        async with engine.connect() as connection:
            applied = await connection.scalar(
                text("SELECT count(*) FROM subscriptions WHERE id LIKE 'sub_ipool_after_%'")
            )
        assert applied == len(after)
