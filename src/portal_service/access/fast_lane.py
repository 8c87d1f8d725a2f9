"""GET /me/entitlements without FastAPI's routing and dependency machinery, for the common
case: a valid bearer token, on PostgreSQL. Dependency resolution, the session and
SQLAlchemy's execution layer cost most of the route's CPU per request (bench/README.md).

The lane does the route's own steps (the bearer token through auth.py, the one statement
of `customer_access` through access/facts_pg.py, `entitlements_response`), so the bytes,
headers, ETag and 304 are the route's. Anything else (no or a bad token, SQLite, an engine
with statement hooks, a database error) is handed to the app unchanged: the route then
does all of it and answers as it always does, problem+json errors included. Nothing is
cached across requests but verified tokens (auth.VerifiedTokens): every answer reads the
mirror as committed at that moment.
"""

from __future__ import annotations

from typing import Any

from fastapi.security.utils import get_authorization_scheme_param
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from portal_service.access.entitlements import access_policy, entitlements_response
from portal_service.access.facts_pg import FastAccessRead
from portal_service.app_state import state_of

_PATH = "/me/entitlements"


class EntitlementsFastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None
        self._read_sessionmaker: Any = None
        self._read: FastAccessRead | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != _PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        response = await self._answer(scope)
        if response is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._entitlements_route()
        await response(scope, receive, send)

    async def _answer(self, scope: Scope) -> Response | None:
        authorization: str | None = None
        if_none_match: str | None = None
        for name, value in scope["headers"]:
            # The first of repeated headers, as Starlette's `Headers.get` takes it.
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        # HTTPBearer's own parsing: anything it would not take goes to the route.
        scheme, token = get_authorization_scheme_param(authorization)
        if not (authorization and scheme and token) or scheme.lower() != "bearer":
            return None
        state = state_of(scope["app"])
        read = self._read_for(state.read_sessionmaker)
        if read is None or not read.available():
            return None
        settings = state.settings
        try:
            user = await state.verified_tokens.end_user(token, settings, state.jwks)
            customer = await read.customer_access(
                app_user_id=user.user_id, livemode=settings.livemode
            )
        except Exception:  # the route answers it: 401, 503 or the database's error
            return None
        # The same URL answers for whoever holds the token: a cache must key on it.
        return entitlements_response(
            customer,
            access_policy(settings),
            if_none_match,
            extra_headers={"Vary": "Authorization"},
        )

    def _read_for(self, sessionmaker: Any) -> FastAccessRead | None:
        # One per lifespan: the lifespan builds the read sessionmaker.
        if sessionmaker is not self._read_sessionmaker:
            self._read = FastAccessRead.for_sessionmaker(sessionmaker)
            self._read_sessionmaker = sessionmaker
        return self._read

    def _entitlements_route(self) -> Any:
        # The route's own object, so the access log and metrics label the request as the
        # route would have.
        if self._route is None:
            from portal_service.access.routes import router  # routes import this module's deps

            self._route = next(
                r
                for r in router.routes
                if getattr(r, "path", None) == _PATH and "GET" in getattr(r, "methods", ())
            )
        return self._route
