"""The `portal-service` command: serve, migrate, openapi (and the ops commands)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from portal_service.commands import build_sessionmaker, fail, load_settings
from portal_service.config import Settings
from portal_service.mirror.endpoints_cli import webhook_endpoint_app
from portal_service.mirror.prune import prune
from portal_service.mirror.reconcile_cli import reconcile
from portal_service.mirror.sync_cli import sync
from portal_service.portal.config_cli import portal_config_app

if TYPE_CHECKING:
    from portal_service.mirror.replay import ReplaySummary

app = typer.Typer(
    name="portal-service",
    help="Stripe's hosted customer portal behind one small API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (PostgreSQL only above 1).")
    ] = 1,
    graceful_timeout: Annotated[
        int,
        typer.Option(
            min=1, help="Seconds in-flight requests get to finish after SIGTERM; then they are cut."
        ),
    ] = 20,
    read_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds a client has to send a whole request (headers and body)."
        ),
    ] = 30.0,
) -> None:
    """Serve the API with uvicorn. Never migrates: run `portal-service migrate` first."""
    import uvicorn

    from portal_service.ops.server import READ_TIMEOUT_ENV, GuardedHttpToolsProtocol

    settings = load_settings(workers=workers)
    if settings.offline and settings.environment == "development":
        from portal_service.main import create_app
        from portal_service.portal.demo import start_demo

        start_demo(settings, create_app, host=host, port=port)
    os.environ[READ_TIMEOUT_ENV] = str(read_timeout)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers are separate processes: aggregate their metrics through shared files.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="portal-metrics-")
    uvicorn.run(
        "portal_service.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        proxy_headers=True,
        server_header=False,
        log_level=settings.log_level.lower(),
        # Slow clients and shutdown, deliberately (uvicorn waits forever by default).
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=graceful_timeout,
    )


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (DATABASE_URL) to the code's newest migration."""
    from portal_service import migrations

    settings = load_settings()
    try:
        migrations.upgrade(settings.database_url, revision)
    except Exception as exc:  # a migration failure is one line, not a traceback, for ops
        raise fail(f"migration failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    typer.echo(f"database at {revision}")


@app.command()
def openapi(
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Print the OpenAPI document (what `make openapi` commits as openapi.json)."""
    from portal_service.main import create_app

    # No .env: the document must not depend on who generates it.
    document = json.dumps(create_app(Settings(_env_file=None)).openapi(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(document)
    else:
        output.write_text(document)


@app.command()
def replay(
    status: Annotated[
        str,
        typer.Option(
            help="Replay the events in this status (failed, pending, ...); `failed` "
            "includes events left pending for over 60 s (a crashed delivery)."
        ),
    ] = "failed",
    event: Annotated[
        list[str] | None,
        typer.Option(help="Replay this event id whatever its status (repeatable)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many events.")] = None,
) -> None:
    """Re-apply recorded webhook events, oldest first, through the webhook path."""
    import asyncio

    from portal_service.mirror.tables import EVENT_STATUSES

    if status not in EVENT_STATUSES:
        raise fail(f"--status must be one of {', '.join(EVENT_STATUSES)}")
    settings = load_settings()
    summary = asyncio.run(_replay(settings, status=status, event_ids=event or [], limit=limit))
    counts = ", ".join(f"{name} {count}" for name, count in sorted(summary.results.items()))
    typer.echo(f"replayed {summary.results.total()} event(s)" + (f": {counts}" if counts else ""))
    if summary.missing:
        typer.echo(f"not recorded: {', '.join(summary.missing)}", err=True)
    if summary.failed or summary.missing:
        raise typer.Exit(code=1)


async def _replay(
    settings: Settings, *, status: str, event_ids: list[str], limit: int | None
) -> ReplaySummary:
    from rich.progress import Progress

    from portal_service.db import create_engine
    from portal_service.gateway.factory import build_gateway
    from portal_service.mirror.intake import EventProcessor
    from portal_service.mirror.replay import events_to_replay, replay_events

    engine = create_engine(settings.database_url)
    gateway = build_gateway(settings)
    try:
        sessionmaker = build_sessionmaker(engine, settings)
        if not event_ids:
            event_ids = await events_to_replay(sessionmaker, status=status, limit=limit)
        elif limit is not None:
            event_ids = event_ids[:limit]
        processor = EventProcessor.for_settings(sessionmaker, gateway, settings)
        with Progress(transient=False) as progress:
            task = progress.add_task("replaying", total=len(event_ids))
            return await replay_events(
                processor, event_ids, on_each=lambda _id, _outcome: progress.advance(task)
            )
    finally:
        await gateway.aclose()
        await engine.dispose()


@app.command("demo-data")
def demo_data(
    reset: Annotated[
        bool, typer.Option("--reset", help="Delete the demo objects first, then create them anew.")
    ] = False,
    service_url: Annotated[
        str, typer.Option(help="Where the service is served (return URL, printed request).")
    ] = "http://127.0.0.1:8000",
) -> None:
    """Create the demo user's customer, subscription, card and invoices in offline mode
    (development only) and print the request that opens its portal."""
    from portal_service.main import create_app
    from portal_service.portal.demo import create_demo_data

    create_demo_data(create_app, reset=reset, service_url=service_url)


# Written next to what they drive (mirror/, portal/), registered here.
app.command()(sync)
app.command()(prune)
app.add_typer(portal_config_app)
app.command()(reconcile)
app.add_typer(webhook_endpoint_app)


def main() -> None:
    app()
