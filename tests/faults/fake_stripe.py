"""A fake Stripe API on a loopback port (uvicorn in the test's event loop), for tests that
run the service as a real process: it creates customers and portal sessions, honours
Idempotency-Key like Stripe (replay; 409 idempotency_key_in_use while the first request
with the key is still running), and misbehaves on request per customer: hangs, 5xx, 429,
409, or a held answer released by the test."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Behaviour = Callable[[dict[str, str]], Awaitable[Response | None]]


def error(status: int, code: str | None = None, **headers: str) -> JSONResponse:
    body: dict[str, Any] = {"error": {"type": "api_error", "message": f"Fake Stripe {status}."}}
    if code:
        body["error"]["code"] = code
        body["error"]["type"] = "invalid_request_error"
    return JSONResponse(
        body, status_code=status, headers={"Request-Id": f"req_{status}", **headers}
    )


@dataclass
class Seen:
    path: str
    form: dict[str, str]
    idempotency_key: str | None
    at: float


@dataclass
class FakeStripe:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    # customer id -> what its portal-session requests get (None: the normal answer)
    sessions: dict[str, Behaviour] = field(default_factory=dict)
    session_requested: asyncio.Event = field(default_factory=asyncio.Event)
    _replays: dict[str, Response] = field(default_factory=dict)
    _running: set[str] = field(default_factory=set)
    _ids: int = 0

    def sent(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def _customers(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        self.seen.append(
            Seen(request.url.path, form, request.headers.get("idempotency-key"), time.monotonic())
        )
        user = form.get("metadata[app_user_id]", "anon")
        return JSONResponse(
            {
                "id": f"cus_{user}",
                "object": "customer",
                "created": int(time.time()),
                "email": form.get("email"),
                "livemode": False,
                "metadata": {"app_user_id": user},
                "name": None,
                "invoice_settings": {"default_payment_method": None},
            },
            headers={"Request-Id": "req_customer"},
        )

    async def _sessions(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        key = request.headers.get("idempotency-key")
        self.seen.append(Seen(request.url.path, form, key, time.monotonic()))
        self.session_requested.set()
        if key is not None and key in self._replays:
            return self._replays[key]
        if key is not None and key in self._running:
            return error(409, "idempotency_key_in_use")
        if key is not None:
            self._running.add(key)
        try:
            behaviour = self.sessions.get(form.get("customer", ""))
            answer = await behaviour(form) if behaviour is not None else None
            if answer is None:
                self._ids += 1
                answer = JSONResponse(
                    {
                        "id": f"bps_fake{self._ids}",
                        "object": "billing_portal.session",
                        "configuration": "bpc_fake",
                        "created": int(time.time()),
                        "customer": form["customer"],
                        "flow": None,
                        "livemode": False,
                        "locale": form.get("locale"),
                        "on_behalf_of": None,
                        "return_url": form.get("return_url"),
                        "url": f"https://billing.stripe.com/p/session/test_fake{self._ids}",
                    },
                    headers={"Request-Id": f"req_session{self._ids}"},
                )
                if key is not None:
                    self._replays[key] = answer
            return answer
        finally:
            if key is not None:
                self._running.discard(key)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/customers", self._customers, methods=["POST"]),
                Route("/v1/billing_portal/sessions", self._sessions, methods=["POST"]),
            ]
        )


@asynccontextmanager
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        fake.app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


def hang(seconds: float) -> Behaviour:
    async def behaviour(_form: dict[str, str]) -> Response | None:
        await asyncio.sleep(seconds)
        return None

    return behaviour


def hold_until(released: asyncio.Event) -> Behaviour:
    async def behaviour(_form: dict[str, str]) -> Response | None:
        await released.wait()
        return None

    return behaviour


def always(response: Callable[[], Response]) -> Behaviour:
    async def behaviour(_form: dict[str, str]) -> Response | None:
        return response()

    return behaviour
