"""POST /webhooks without FastAPI's routing and dependency machinery, for the common case:
a verified, new event that PostgreSQL's fast path (mirror/intake_pg.py) records and
applies. That machinery cost about a third of intake's CPU per event (bench/README.md).

The lane buffers the body and runs the route's own steps (read_body's limit, verify,
parse_event, EventProcessor.receive_fast). Anything else, an error included, is handed to
the app with the same body, unchanged: the route then does all of it and answers as it
always does (problem+json errors, the general path). Nothing is written before the lane
answers 200, so a request it hands on has left nothing behind.
"""

from __future__ import annotations

import functools
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portal_service.app_state import state_of
from portal_service.mirror.events import parse_event, verify
from portal_service.mirror.intake import EventProcessor
from portal_service.mirror.schemas import WebhookAck, WebhookStatus

_PATH = "/webhooks"


class WebhookFastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None
        # The processor of the app state's (sessionmaker, gateway, settings, intake pool):
        # built once, not per event.
        self._processor: tuple[tuple[Any, ...], EventProcessor] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != _PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        settings = state_of(app).settings
        limit: int = settings.webhook_max_body_bytes
        chunks: list[bytes] = []
        size = 0
        more = True
        declared = _header(scope, b"content-length")
        if declared is None or not declared.isdigit() or int(declared) <= limit:
            while more and size <= limit:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away before its body was read
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                more = message.get("more_body", False)
        status = None
        if not more and size <= limit:
            status = await self._receive(app, settings, scope, b"".join(chunks))
        if status is None:
            await self.app(scope, _replay(chunks, more, receive), send)
            return
        scope["route"] = self._webhook_route()
        body = _ack(status)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _receive(self, app: Any, settings: Any, scope: Scope, body: bytes) -> Any:
        processor = self._processor_for(app, settings)
        if not processor.has_fast_path or not settings.stripe_webhook_secrets:
            return None  # SQLite, an outbox to write, or no secrets: the route does it all
        try:
            verify(body, _header(scope, b"stripe-signature"), settings)
            received = parse_event(body)
        except Exception:  # the route answers it (400 problem+json)
            return None
        return await processor.receive_fast(received)

    def _processor_for(self, app: Any, settings: Any) -> EventProcessor:
        state = state_of(app)
        pool = getattr(state, "intake_pool", None)
        key = (state.sessionmaker, state.gateway, settings, pool)
        cached = self._processor
        if cached is not None and all(a is b for a, b in zip(cached[0], key, strict=True)):
            return cached[1]
        processor = EventProcessor.for_settings(
            state.sessionmaker, state.gateway, settings, intake_pool=pool
        )
        self._processor = (key, processor)
        return processor

    def _webhook_route(self) -> Any:
        # The route's own object, so the access log and metrics label the request as the
        # route would have.
        if self._route is None:
            from portal_service.mirror.routes import router  # routes import this package

            self._route = next(r for r in router.routes if getattr(r, "path", None) == _PATH)
        return self._route


@functools.cache
def _ack(status: WebhookStatus) -> bytes:
    """The route's answer for `status`, rendered once per status."""
    return WebhookAck(status=status).model_dump_json().encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def _replay(chunks: list[bytes], more: bool, receive: Receive) -> Receive:
    """A `receive` that hands back what was read, then goes on with the client's stream.
    `more`: the body was cut short at the limit and the rest is still to come."""
    messages: list[Message] = []
    if chunks:
        messages.append({"type": "http.request", "body": b"".join(chunks), "more_body": more})

    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed
