"""create_app(settings): lifespan, routers, error handlers and middleware."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from portal_service import __version__
from portal_service.access.fast_lane import EntitlementsFastLane
from portal_service.access.routes import router as access_router
from portal_service.app_state import AppState, state_of
from portal_service.auth import JwksCache, VerifiedTokens
from portal_service.commands import build_sessionmaker
from portal_service.config import Settings, get_settings
from portal_service.db import create_engine, create_sessionmaker, for_reads
from portal_service.errors import document_problems, install_error_handlers
from portal_service.gateway import Gateway
from portal_service.gateway.factory import build_gateway
from portal_service.gateway.offline import development_settings
from portal_service.mirror.adoption import mirrored_objects
from portal_service.mirror.fast_lane import WebhookFastLane
from portal_service.mirror.intake_pool import open_pool
from portal_service.mirror.routes import router as mirror_router
from portal_service.notify.routes import router as notify_router
from portal_service.notify.service import Notifier
from portal_service.ops.limits import install_body_limit
from portal_service.ops.logging import configure_logging
from portal_service.ops.middleware import ProblemCORSMiddleware, RequestContextMiddleware
from portal_service.ops.routes import router as ops_router
from portal_service.ops.security_headers import SecurityHeadersMiddleware
from portal_service.portal.flows import TaxBehaviorCache
from portal_service.portal.routes import router as portal_router
from portal_service.portal.startup import portal_config

# The JSON bodies of the API are a few hundred bytes; webhooks have their own,
# configurable limit (WEBHOOK_MAX_BODY_BYTES) and answer 400 past it.
JSON_MAX_BODY_BYTES = 64 * 1024

DESCRIPTION = """\
Stripe's hosted customer portal behind one small API, with an exact SQL mirror of every
customer's billing state. Errors are RFC 9457 `application/problem+json` with a stable `code`.
"""


_frozen = False


def _freeze_once() -> None:
    """What the process has built by the first start-up (modules, the app, its routes and
    models) lives as long as it: out of the collector's sight, so its full collections under
    load no longer walk it. Once per process: a test run starts many apps."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


class PortalApp(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state: AppState = AppState()  # typed: what create_app and the lifespan build

    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's ServerErrorMiddleware, so a 500 still gets a request id and
        # the security headers.
        return SecurityHeadersMiddleware(RequestContextMiddleware(super().build_middleware_stack()))

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = document_problems(super().openapi())
        return self.openapi_schema


def create_app(settings: Settings | None = None, *, gateway: Gateway | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check()
    # Parsed by the start-up check above: the app's requests read this one (AppState).
    checked_portal_config = portal_config(settings)
    settings = development_settings(settings)
    configure_logging(level=settings.log_level, fmt=settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        read_engine = (
            create_engine(settings.database_read_url) if settings.database_read_url else engine
        )
        state = state_of(app)
        state.engine = engine
        state.intake_pool = await open_pool(engine)
        # With NOTIFY_URL, every read-write session writes the access.changed outbox.
        state.sessionmaker = build_sessionmaker(engine, settings)
        state.read_sessionmaker = create_sessionmaker(for_reads(read_engine))
        state.gateway = gateway or build_gateway(settings, app, mirrored=mirrored_objects)
        state.jwks = JwksCache(settings.auth_jwks_url) if settings.auth_jwks_url else None
        state.portal_config = checked_portal_config
        notifier = Notifier(state.sessionmaker, settings) if settings.notify_url else None
        state.notifier = notifier
        if notifier is not None:
            notifier.start()
        _freeze_once()
        try:
            yield
        finally:
            if notifier is not None:
                await notifier.stop()
            await state.gateway.aclose()
            if state.intake_pool is not None:
                await state.intake_pool.close()
            if read_engine is not engine:
                await read_engine.dispose()
            await engine.dispose()

    app = PortalApp(
        title="portal-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    state_of(app).settings = settings
    state_of(app).tax_behavior_cache = TaxBehaviorCache()
    state_of(app).verified_tokens = VerifiedTokens()
    install_error_handlers(app)
    # Inside the body limit and CORS, like the route it stands in for.
    app.add_middleware(EntitlementsFastLane)
    install_body_limit(app, max_bytes=JSON_MAX_BODY_BYTES, exempt_paths=("/webhooks",))
    app.add_middleware(WebhookFastLane)
    if settings.cors_allow_origins:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-None-Match",
                "X-Request-ID",
            ],
            expose_headers=["ETag", "X-Request-ID", "Retry-After", "Idempotent-Replayed"],
            max_age=600,
        )
    app.include_router(ops_router)
    app.include_router(portal_router)
    app.include_router(access_router)
    app.include_router(mirror_router)
    app.include_router(notify_router)
    return app
