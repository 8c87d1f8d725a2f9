"""A cap on request bodies, answered with problem+json 413 (pure ASGI).

Starlette's RequestBodyLimitMiddleware (FastAPI's `max_body_size`) replaces the response
with a plain-text 413 whenever a declared Content-Length is over the limit, so every
error would no longer be problem+json; this layer refuses such a request before the app
reads anything, and cuts a streamed body (no Content-Length) once it passes the limit by
raising the 413 inside the app, where the problem+json handler renders it. Paths with a
limit of their own (webhooks: WEBHOOK_MAX_BODY_BYTES, answered 400) are left alone.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal_service.errors import problem_response

_DETAIL = "The request body is larger than {limit} bytes."
CODE = "content_too_large"


class BodyTooLarge(HTTPException):
    """Raised inside the app: FastAPI lets an HTTPException out of its body parsing
    (anything else becomes a 400), and the handler below renders it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _DETAIL.format(limit=limit))


def install_body_limit(app: FastAPI, *, max_bytes: int, exempt_paths: tuple[str, ...]) -> None:
    async def on_too_large(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BodyTooLarge)  # noqa: S101 - registered for it only
        return problem_response(413, CODE, str(exc.detail))

    app.add_exception_handler(BodyTooLarge, on_too_large)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes, exempt_paths=exempt_paths)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt_paths: tuple[str, ...]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    response = problem_response(
                        413, "content_too_large", _DETAIL.format(limit=limit)
                    )
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def receive_with_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, receive_with_limit, send)
