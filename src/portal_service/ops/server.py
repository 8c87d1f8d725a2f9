"""uvicorn's httptools protocol with the two limits uvicorn lacks: a deadline for reading a
whole request (headers and body) and a cap on the size of its headers.

uvicorn times out idle keep-alive connections only: a client that connects and sends
nothing, trickles its headers or never finishes its body holds a connection (and, past
the headers, a running request) forever, and the headers it sends accumulate without
bound. Here the request line, headers and body must all arrive within the read timeout
of the connection opening or of the request's first byte (408 otherwise), and request
line plus headers may not exceed MAX_HEADER_BYTES (431). Slow handlers are not cut off:
the deadline ends when the request has been read.
"""

from __future__ import annotations

import asyncio
import os
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# `serve` sets it from --read-timeout; workers inherit the environment.
READ_TIMEOUT_ENV = "PORTAL_HTTP_READ_TIMEOUT"
DEFAULT_READ_TIMEOUT_SECONDS = 30.0
MAX_HEADER_BYTES = 32 * 1024


class _HeadersTooLarge(Exception):
    pass


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = float(os.environ.get(READ_TIMEOUT_ENV) or DEFAULT_READ_TIMEOUT_SECONDS)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._refusal: HTTPStatus | None = None

    def _arm(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self._read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn passes a Transport
        super().connection_made(transport)
        self._arm()  # a client that connects and sends nothing

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refusal = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            # Raised inside the parser callback: httptools stops parsing, and uvicorn
            # answers through send_400_response (below) and closes the connection.
            raise _HeadersTooLarge()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            # A body still being read: the handler sees the disconnect (http.disconnect).
            self._refusal = HTTPStatus.REQUEST_TIMEOUT
            self.send_400_response("The request was not received in time.")
        else:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        refusal, self._refusal = self._refusal, None
        if refusal is None:
            super().send_400_response(msg)
            return
        text = msg if refusal is HTTPStatus.REQUEST_TIMEOUT else "Request headers too large."
        body = text.encode("ascii")
        self.transport.write(
            b"".join(
                [
                    f"HTTP/1.1 {refusal.value} {refusal.phrase}\r\n".encode("ascii"),
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
