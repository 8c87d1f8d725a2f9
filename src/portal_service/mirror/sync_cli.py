"""`portal-service sync`: backfill the mirror from Stripe, or catch up from its Events API
(README.md, "Backfill and reconciliation"). Registered on the CLI with `app.command()(sync)`."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer

from portal_service.commands import fail
from portal_service.mirror.sync import SYNC_KINDS, parse_only, parse_since

if TYPE_CHECKING:
    from portal_service.config import Settings


def sync(
    events: Annotated[
        bool,
        typer.Option(
            "--events",
            help="Catch up from Stripe's Events API (30 days) after the newest recorded "
            "event, recording and applying each as a delivery, oldest first.",
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only objects created at or after this ISO date / date-time (UTC) or unix "
            "time (customers, subscriptions, invoices)."
        ),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated kinds to sync: {','.join(SYNC_KINDS)}."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted sync: skip kinds it completed, continue the others "
            "after the last object applied.",
        ),
    ] = False,
    concurrency: Annotated[
        int, typer.Option(min=1, max=16, help="Customers whose lists are fetched at once.")
    ] = 4,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also settle mirrored objects Stripe no longer lists (a payment method "
            "detached, an object deleted while no webhook came): each is retrieved and "
            "applied as Stripe answers. Not with --since or --resume.",
        ),
    ] = False,
    account: Annotated[
        str | None,
        typer.Option(help="Sync this Connect account (acct_...) instead of the platform."),
    ] = None,
) -> None:
    """Backfill the mirror from Stripe through the webhooks' upsert path (ordering holds)."""
    try:
        kinds = parse_only(only)
    except ValueError as exc:
        raise fail(f"--only: {exc}") from None
    if prune and (since is not None or resume or events):
        raise fail("--prune needs whole lists: not with --since, --resume or --events")
    # 40: the account is part of a sync_state key (64 characters with the kind); Stripe's
    # account ids are about 21.
    if account is not None and not (
        account.startswith("acct_") and account[5:].isalnum() and len(account) <= 40
    ):
        raise fail("--account must be a Stripe account id (acct_...)")
    try:
        since_ts = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise fail(f"--since: {exc}") from None
    from portal_service.commands import load_settings
    from portal_service.errors import DomainError

    settings = load_settings()
    try:
        _run(
            settings,
            events=events,
            kinds=kinds,
            since=since_ts,
            resume=resume,
            concurrency=concurrency,
            prune=prune,
            account=account or "",
        )
    except DomainError as exc:
        typer.echo(f"portal-service: sync stopped: {exc.code}: {exc.detail}", err=True)
        if not events:
            typer.echo("portal-service: run `portal-service sync --resume` to continue", err=True)
        raise typer.Exit(code=1) from None


def _run(
    settings: Settings,
    *,
    events: bool,
    kinds: list[str],
    since: int | None,
    resume: bool,
    concurrency: int,
    prune: bool = False,
    account: str = "",
) -> None:
    if events:
        counts = asyncio.run(sync_events(settings, account=account))
        summary = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
        typer.echo(f"events: {counts.total()}" + (f" ({summary})" if summary else ""))
        if counts["failed"]:
            raise typer.Exit(code=1)
        return
    results = asyncio.run(
        sync_objects(
            settings,
            kinds=kinds,
            since=since,
            resume=resume,
            concurrency=concurrency,
            prune=prune,
            account=account,
        )
    )
    for kind in kinds:
        outcomes = {o: n for (k, o), n in sorted(results.items()) if k == kind}
        detail = ", ".join(f"{o} {n}" for o, n in outcomes.items())
        typer.echo(f"{kind}: {sum(outcomes.values())}" + (f" ({detail})" if detail else ""))


async def sync_objects(
    settings: Settings,
    *,
    kinds: list[str],
    since: int | None,
    resume: bool,
    concurrency: int,
    prune: bool = False,
    account: str = "",
) -> Counter[tuple[str, str]]:
    from rich.progress import Progress, TaskID

    from portal_service.commands import build_sessionmaker
    from portal_service.db import create_engine
    from portal_service.gateway.factory import build_gateway
    from portal_service.mirror.sync import run_sync

    engine = create_engine(settings.database_url)
    gateway = build_gateway(settings)
    try:
        with Progress(transient=False) as progress:
            tasks: dict[str, TaskID] = {kind: progress.add_task(kind, total=None) for kind in kinds}
            return await run_sync(
                build_sessionmaker(engine, settings),
                gateway,
                livemode=settings.livemode,
                kinds=kinds,
                since=since,
                resume=resume,
                concurrency=concurrency,
                on_page=lambda kind, n: progress.advance(tasks[kind], n),
                prune=prune,
                account=account,
            )
    finally:
        await gateway.aclose()
        await engine.dispose()


async def sync_events(settings: Settings, *, account: str = "") -> Counter[str]:
    from rich.progress import Progress

    from portal_service.commands import build_sessionmaker
    from portal_service.db import create_engine
    from portal_service.gateway.factory import build_gateway
    from portal_service.mirror.intake import EventProcessor
    from portal_service.mirror.sync import Syncer

    engine = create_engine(settings.database_url)
    gateway = build_gateway(settings)
    try:
        sessionmaker = build_sessionmaker(engine, settings)
        processor = EventProcessor.for_settings(sessionmaker, gateway, settings)
        with Progress(transient=False) as progress:
            task = progress.add_task("events", total=None)
            syncer = Syncer(
                sessionmaker,
                gateway,
                livemode=settings.livemode,
                account=account,
                on_page=lambda _kind, n: progress.advance(task, n),
            )
            return await syncer.catch_up_events(processor)
    finally:
        await gateway.aclose()
        await engine.dispose()
