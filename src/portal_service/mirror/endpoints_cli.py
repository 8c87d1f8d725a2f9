"""`portal-service webhook-endpoint check|create --url URL [--connect]` (README.md, "Pointing Stripe's webhooks at it").

Exit codes: 0 the endpoint is as this service needs it (or was created), 1 a mismatch (a
wrong API version, missing or extra event types, disabled, or no endpoint at the URL), 2 an
error (one line on stderr). Registered on the CLI with `app.add_typer(webhook_endpoint_app)`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from portal_service.config import Settings
    from portal_service.mirror.endpoints import EndpointCheck

webhook_endpoint_app = typer.Typer(
    name="webhook-endpoint",
    help="Check or create Stripe's webhook endpoint for this service.",
    no_args_is_help=True,
)

UrlOption = Annotated[str, typer.Option("--url", help="The endpoint's URL (…/webhooks).")]
ConnectOption = Annotated[
    bool,
    typer.Option("--connect", help="The endpoint receives events of connected accounts."),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"portal-service webhook-endpoint: {message}", err=True)
    return typer.Exit(code=2)


def _prepare(url: str) -> tuple[Settings, str]:
    from portal_service.commands import load_settings
    from portal_service.mirror.endpoints import check_url

    try:
        url = check_url(url)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    settings = load_settings()
    if settings.offline:
        raise _fail("offline mode (no STRIPE_API_KEY): webhook endpoints live in Stripe")
    return settings, url


def _run(settings: Settings, action: Any) -> Any:
    from portal_service.errors import DomainError
    from portal_service.gateway.factory import build_gateway

    async def run() -> Any:
        gateway = build_gateway(settings)
        try:
            return await action(gateway)
        finally:
            await gateway.aclose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        raise _fail(f"{exc.code}: {exc.detail}") from None


@webhook_endpoint_app.command()
def check(url: UrlOption, connect: ConnectOption = False) -> None:
    """Report how the mode's endpoints at URL differ from what this service handles."""
    from portal_service.mirror.endpoints import check_endpoints

    settings, url = _prepare(url)
    version = settings.stripe_api_version
    checks: list[EndpointCheck] = _run(
        settings,
        lambda gateway: check_endpoints(gateway, url=url, api_version=version, connect=connect),
    )
    if not checks:
        typer.echo(f"no webhook endpoint points at {url} (run `webhook-endpoint create`)")
        raise typer.Exit(code=1)
    for endpoint in checks:
        if not endpoint.problems:
            typer.echo(f"{endpoint.id}: ok (api_version {version})")
        for problem in endpoint.problems:
            typer.echo(f"{endpoint.id}: {problem}")
    if any(endpoint.problems for endpoint in checks):
        raise typer.Exit(code=1)


@webhook_endpoint_app.command()
def create(url: UrlOption, connect: ConnectOption = False) -> None:
    """Create the endpoint (API version STRIPE_API_VERSION, exactly the handled event
    types) and print its signing secret once: add it to STRIPE_WEBHOOK_SECRETS."""
    from portal_service.mirror.endpoints import check_endpoints, create_endpoint

    settings, url = _prepare(url)
    version = settings.stripe_api_version

    async def action(gateway: Any) -> Any:
        existing = await check_endpoints(gateway, url=url, api_version=version, connect=connect)
        if existing:
            return existing
        return await create_endpoint(gateway, url=url, api_version=version, connect=connect)

    result = _run(settings, action)
    if isinstance(result, list):
        ids = ", ".join(endpoint.id for endpoint in result)
        raise _fail(f"an endpoint already points at {url} ({ids}): run `webhook-endpoint check`")
    typer.echo(f"created {result.get('id')} for {url} (api_version {version})")
    secret = result.get("secret")
    if secret:
        # Shown once, here only: Stripe never returns it again, and it is never logged.
        typer.echo(f"signing secret (add it to STRIPE_WEBHOOK_SECRETS): {secret}")
