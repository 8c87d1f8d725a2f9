"""What every `portal-service` command shares: settings checked into one line on failure,
the exit of a refused command, and the sessionmaker of commands that apply objects.

The command modules (cli.py, mirror/*_cli.py, portal/demo.py, mirror/prune.py) import this,
never cli.py or main.py (ARCHITECTURE.md, "Rules of dependency")."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from portal_service.config import ConfigError, Settings, get_settings


def fail(message: str) -> typer.Exit:
    typer.echo(f"portal-service: {message}", err=True)
    return typer.Exit(code=2)


def load_settings(*, workers: int = 1) -> Settings:
    try:
        settings = get_settings()
        settings.check(workers=workers)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise fail(invalid_settings(exc)) from None
    except ValueError as exc:  # any other refusal still ends in one line, not a traceback
        raise fail("invalid settings: " + (str(exc).splitlines() or [""])[0]) from None
    return settings


def invalid_settings(exc: ValidationError) -> str:
    # One line naming the variable as the operator wrote it; never the value, which may be
    # a secret (pydantic's own message quotes the input).
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    variable = str(first["loc"][0]).upper() if first["loc"] else "settings"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid {variable}: {first['msg']}{more}"


def build_sessionmaker(engine: AsyncEngine, settings: Settings) -> async_sessionmaker[AsyncSession]:
    """The read-write sessionmaker of the app and of the CLI commands that apply objects:
    with NOTIFY_URL, its sessions write the access.changed outbox."""
    from portal_service.notify.outbox import outbox_sessionmaker  # the outbox reads access/

    return outbox_sessionmaker(engine, settings)
