"""AppState: what create_app and its lifespan build (settings, engines, sessionmakers, the
gateway, the JWKS cache, the verified tokens, the parsed PORTAL_CONFIG_FILE, the notifier,
the tax-behavior cache), typed, on `app.state`.

Every module reads it through `app_state(request)` or `state_of(app)` instead of untyped
`app.state` keys. The attributes stay on Starlette's `State`, so `app.state.engine` still
works where an app is only at hand (tests, bench). The types are imported only for the
type checker: any layer may read the state without importing the layers that fill it."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.datastructures import State

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from portal_service.auth import JwksCache, VerifiedTokens
    from portal_service.config import Settings
    from portal_service.gateway.base import Gateway
    from portal_service.mirror.intake_pool import IntakePool
    from portal_service.notify.service import Notifier
    from portal_service.portal.configs import PortalConfigFile
    from portal_service.portal.flows import TaxBehaviorCache


class AppState(State):
    # Set by create_app, before any request.
    settings: Settings
    tax_behavior_cache: TaxBehaviorCache
    """Prices' tax behaviors, shared by the app's requests (portal/flows.py)."""
    verified_tokens: VerifiedTokens
    """HS256 tokens already verified, shared by the routes and the entitlements lane."""
    # Set by the lifespan.
    engine: AsyncEngine
    intake_pool: IntakePool | None
    """Webhook intake's fast path's own asyncpg pool on `engine`, handed out in arrival order
    (mirror/intake_pool.py), or None (not asyncpg)."""
    sessionmaker: async_sessionmaker[AsyncSession]
    """Read-write; with NOTIFY_URL its sessions write the access.changed outbox."""
    read_sessionmaker: async_sessionmaker[AsyncSession]
    """DATABASE_READ_URL's (or the primary's), read-only."""
    gateway: Gateway
    jwks: JwksCache | None
    portal_config: PortalConfigFile | None
    notifier: Notifier | None


def state_of(app: FastAPI) -> AppState:
    return cast("AppState", app.state)


def app_state(request: Request) -> AppState:
    return state_of(request.app)
