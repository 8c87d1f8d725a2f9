"""The `portal-service` command: serve, migrate, openapi (and the ops commands)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from portal_service.config import ConfigError, Settings, get_settings

app = typer.Typer(
    name="portal-service",
    help="Stripe's hosted customer portal behind one small API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"portal-service: {message}", err=True)
    return typer.Exit(code=2)


def _settings(*, workers: int = 1) -> Settings:
    try:
        settings = get_settings()
        settings.check(workers=workers)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:  # pydantic's ValidationError: name the first bad variable only
        first = str(exc).splitlines()
        raise _fail("invalid settings: " + " ".join(first[1:3]).strip()) from None
    return settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (PostgreSQL only above 1).")
    ] = 1,
) -> None:
    """Serve the API with uvicorn. Never migrates: run `portal-service migrate` first."""
    import uvicorn

    settings = _settings(workers=workers)
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
    )


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (DATABASE_URL) to the code's newest migration."""
    from portal_service import migrations

    settings = _settings()
    try:
        migrations.upgrade(settings.database_url, revision)
    except Exception as exc:  # a migration failure is one line, not a traceback, for ops
        raise _fail(f"migration failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
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


def main() -> None:
    app()
