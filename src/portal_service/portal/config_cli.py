"""`portal-service portal-config diff|apply`: the command side of config_sync.

Exit codes, like `git diff --exit-code`: 0 Stripe matches the file, 1 it differs (diff,
apply --dry-run), 2 an error (one line on stderr); apply exits 0 once Stripe matches.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from portal_service.config import ConfigError, Settings, get_settings
from portal_service.portal.config_diff import mode_name
from portal_service.portal.config_sync import (
    CatalogProblems,
    ConfigSyncError,
    apply_file,
    check_catalog,
    diff_lines,
    plan_configurations,
)
from portal_service.portal.configs import (
    PortalConfigError,
    PortalConfigFile,
    load_portal_config,
)
from portal_service.portal.startup import portal_config

portal_config_app = typer.Typer(
    name="portal-config",
    help="Compare PORTAL_CONFIG_FILE with Stripe's portal configurations, or apply it.",
    no_args_is_help=True,
)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="The configuration file (default: PORTAL_CONFIG_FILE)."),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"portal-service portal-config: {message}", err=True)
    return typer.Exit(code=2)


def _load(file: Path | None) -> tuple[Settings, Path, PortalConfigFile]:
    try:
        settings = get_settings()
        settings.check()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        # Never the value: it may be a secret.
        first = exc.errors(include_input=False, include_url=False)[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise _fail(f"invalid {variable}: {first['msg']}") from None
    if settings.offline:
        raise _fail("offline mode (no STRIPE_API_KEY): portal configurations live in Stripe")
    path = file or (Path(settings.portal_config_file) if settings.portal_config_file else None)
    if path is None:
        raise _fail("no configuration file: set PORTAL_CONFIG_FILE or pass --file")
    try:
        if file is None:
            # PORTAL_CONFIG_FILE: parsed once, by the settings' start-up check above.
            checked = portal_config(settings)
            if checked is not None:
                return settings, path, checked
        return settings, path, load_portal_config(path)
    except (ConfigError, PortalConfigError) as exc:
        raise _fail(str(exc)) from None


def _print_diff(lines: list[tuple[str, str | None]]) -> None:
    console = Console(highlight=False, soft_wrap=True)
    for line, style in lines:
        console.print(line, style=style, markup=False)


async def _diff(settings: Settings, config_file: PortalConfigFile, *, check: bool) -> int:
    from portal_service.gateway.stripe import StripeGateway

    gateway = StripeGateway(settings)
    try:
        plans = await plan_configurations(gateway, config_file, livemode=settings.livemode)
        problems = (
            await check_catalog(gateway, config_file, livemode=settings.livemode) if check else []
        )
    finally:
        await gateway.aclose()
    _print_diff(diff_lines(plans, livemode=settings.livemode))
    for problem in problems:
        typer.echo(f"portal-service portal-config: {problem}", err=True)
    if problems:
        return 2
    return 1 if any(plan.changed for plan in plans) else 0


async def _apply(settings: Settings, path: Path, config_file: PortalConfigFile) -> list[str]:
    from portal_service.db import create_engine, create_sessionmaker
    from portal_service.gateway.stripe import StripeGateway

    livemode = settings.livemode
    engine = create_engine(settings.database_url)
    gateway = StripeGateway(settings)
    try:
        applied = await apply_file(
            gateway, create_sessionmaker(engine), path, config_file, livemode=livemode
        )
    except CatalogProblems as exc:
        for problem in exc.problems:
            typer.echo(f"portal-service portal-config: {problem}", err=True)
        raise
    finally:
        await gateway.aclose()
        await engine.dispose()
    mode = mode_name(livemode=livemode)
    report = [
        f"{item.action} {item.name}: {item.configuration_id} ({mode} mode)"
        for item in applied.written
    ]
    if applied.recorded:
        report.append(f"recorded {len(applied.recorded)} {mode} id(s) in {path}")
    return report


@portal_config_app.command()
def diff(file: FileOption = None) -> None:
    """Show what differs between the file and Stripe for the API key's mode
    (exit 0: identical, 1: differences, 2: error)."""
    settings, _path, config_file = _load(file)
    try:
        code = asyncio.run(_diff(settings, config_file, check=False))
    except ConfigSyncError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code=code)


@portal_config_app.command()
def apply(
    file: FileOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Only show the diff (and check products and prices); write nothing."
        ),
    ] = False,
) -> None:
    """Create or update the file's configurations in Stripe (checks products and prices first)."""
    # Then writes Stripe's answers into the mirror and records new ids in the file; a
    # missing product or price stops the run before anything is written (exit 2).
    settings, path, config_file = _load(file)
    try:
        if dry_run:
            raise typer.Exit(code=asyncio.run(_diff(settings, config_file, check=True)))
        report = asyncio.run(_apply(settings, path, config_file))
    except ConfigSyncError as exc:
        raise _fail(str(exc)) from None
    for line in report:
        typer.echo(line)
