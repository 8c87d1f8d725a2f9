"""The outermost ASGI layer: request ids, access logs, HTTP metrics and the problem+json 500.

It wraps Starlette's ServerErrorMiddleware so even an unhandled error answers with
problem+json and an X-Request-ID, and never leaks internals.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import structlog
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal_service.errors import internal_error_response, problem_response
from portal_service.ops.logging import get_logger
from portal_service.ops.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = get_logger("portal_service.http")
_http_logger = logging.getLogger("portal_service.http")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    # FastAPI's routes record themselves in the scope; Starlette's plain ones (/docs,
    # /openapi.json) do not, and neither does a route hit with the wrong method (405).
    # Find the template again rather than label them like a 404: one series per route.
    partial: str | None = None
    for candidate in getattr(getattr(scope.get("app"), "router", None), "routes", ()):
        template = getattr(candidate, "path", None)
        if not isinstance(template, str):
            continue
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return template
        if match is Match.PARTIAL and partial is None:
            partial = template
    return partial or "unmatched"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The metric series of each (route template, method, status) seen: `labels()`
        # validates and locks on every call. Bounded by the app's routes.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _series(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(route=route, method=method, status=str(status)),
                HTTP_REQUEST_SECONDS.labels(route=route, method=method),
            )
            self._children[key] = children
        return children

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        header = (b"x-request-id", request_id.encode("latin-1"))
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message["headers"] = [*headers, header]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled_error", method=scope["method"], route=_route_template(scope))
            # Starlette's ServerErrorMiddleware has usually answered already (through
            # the Exception handler) and re-raised; the response is complete then.
            if not response_started:
                status = 500
                await internal_error_response(request_id)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"]
            requests, seconds = self._series(route, method, status)
            requests.inc()
            seconds.observe(elapsed)
            # Filtered out below INFO anyway; skipping the call spares structlog's chain.
            if _http_logger.isEnabledFor(logging.INFO):
                log.info(
                    "http_request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as problem+json like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        # Starlette says which check failed in a plain-text body ("Disallowed CORS origin").
        detail = bytes(response.body).decode("utf-8", "replace")
        problem = problem_response(400, "cors_preflight_rejected", detail)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "content-type"):
                problem.headers[name] = value
        return problem
