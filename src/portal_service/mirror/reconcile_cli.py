"""`portal-service reconcile [--only KINDS] [--sample N] [--fix]` (README.md, "Backfill and reconciliation"):
a table of drift between the mirror and Stripe per kind; exit 1 on drift, 2 on an error.
Registered on the CLI with `app.command()(reconcile)`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from portal_service.commands import fail
from portal_service.mirror.reconcile import RECONCILE_KINDS, parse_kinds

if TYPE_CHECKING:
    from portal_service.config import Settings
    from portal_service.mirror.drift import KindReport

# Drift lines printed per kind; the counts in the table always cover everything.
MAX_DETAILS = 20


def reconcile(
    only: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated kinds to compare: {','.join(RECONCILE_KINDS)}."),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Compare N random mirrored objects per kind, each retrieved from Stripe, "
            "instead of every object (finds what differs or is gone there, not what is "
            "missing here).",
        ),
    ] = None,
    fix: Annotated[
        bool,
        typer.Option("--fix", help="Apply Stripe's objects through the webhooks' upsert path."),
    ] = False,
    account: Annotated[
        str | None,
        typer.Option(help="A Connect account (acct_...) instead of the platform account."),
    ] = None,
) -> None:
    """Compare the mirror with Stripe; exit 1 when they differ (even if --fix repaired it)."""
    try:
        kinds = parse_kinds(only)
    except ValueError as exc:
        raise fail(f"--only: {exc}") from None
    if account is not None and not _is_account(account):
        raise fail("--account must be a Stripe account id (acct_...)")
    from portal_service.commands import load_settings
    from portal_service.errors import DomainError

    settings = load_settings()
    if settings.offline:
        raise fail("reconcile needs STRIPE_API_KEY (offline mode has no Stripe to compare)")
    try:
        reports = asyncio.run(
            _run(settings, kinds=kinds, sample=sample, fix=fix, account=account or "")
        )
    except DomainError as exc:
        raise fail(f"reconcile stopped: {exc.code}: {exc.detail}") from None
    _print(reports, fix=fix)
    if any(report.drift for report in reports.values()):
        raise typer.Exit(code=1)


def _is_account(value: str) -> bool:
    return value.startswith("acct_") and value[5:].isalnum() and len(value) <= 255


async def _run(
    settings: Settings,
    *,
    kinds: list[str],
    sample: int | None,
    fix: bool,
    account: str,
) -> dict[str, KindReport]:
    from rich.progress import Progress, TaskID

    from portal_service.commands import build_sessionmaker
    from portal_service.db import create_engine
    from portal_service.gateway.factory import build_gateway
    from portal_service.mirror.reconcile import Reconciler

    engine = create_engine(settings.database_url)
    gateway = build_gateway(settings)
    try:
        with Progress(transient=True) as progress:
            tasks: dict[str, TaskID] = {kind: progress.add_task(kind, total=None) for kind in kinds}
            reconciler = Reconciler(
                # With NOTIFY_URL, a fix that changes an answer records its access.changed.
                build_sessionmaker(engine, settings),
                gateway,
                livemode=settings.livemode,
                account=account,
                sample=sample,
                on_progress=lambda kind, n: progress.advance(tasks[kind], n),
            )
            return await reconciler.run(kinds, fix=fix)
    finally:
        await gateway.aclose()
        await engine.dispose()


def _print(reports: dict[str, KindReport], *, fix: bool) -> None:
    header = ["kind", "checked", "missing here", "missing there", "differs"]
    if fix:
        header.append("fixed")
    lines = [header]
    for kind, report in reports.items():
        line = [
            kind,
            str(report.checked),
            str(report.count("missing_here")),
            str(report.count("missing_there")),
            str(report.count("differs")),
        ]
        if fix:
            line.append(str(report.fixed["applied"]) + _not_fixed(report))
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())
    for kind, report in reports.items():
        for drift in report.drift[:MAX_DETAILS]:
            detail = f" ({', '.join(drift.fields)})" if drift.fields else ""
            typer.echo(f"{kind} {drift.object_id}: {drift.problem.replace('_', ' ')}{detail}")
        if len(report.drift) > MAX_DETAILS:
            typer.echo(f"{kind}: {len(report.drift) - MAX_DETAILS} more")
    found = sum(len(report.drift) for report in reports.values())
    typer.echo("no drift" if not found else f"drift: {found} object(s)")


def _not_fixed(report: KindReport) -> str:
    rest = {name: n for name, n in report.fixed.items() if name != "applied" and n}
    if not rest:
        return ""
    return " (" + ", ".join(f"{name} {n}" for name, n in sorted(rest.items())) + ")"
