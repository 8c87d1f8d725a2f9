"""A real receiver of notifications: an HTTP server on 127.0.0.1 that verifies every
delivery with the standardwebhooks library, records it, and answers as the test scripts."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

NOTIFY_SECRET = "whsec_" + base64.b64encode(b"portal-notify-test-secret-32byte").decode()


@dataclass
class Delivery:
    webhook_id: str
    timestamp: str
    body: dict[str, Any]


@dataclass
class Receiver:
    url: str
    # Answers to give, in order ("ok", "fail" for a 500, "hang" to outlast the timeout);
    # once used up, every delivery is answered 200.
    script: list[str] = field(default_factory=list)
    hang_seconds: float = 2.0
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self) -> list[str]:
        with self.lock:
            return [d.webhook_id for d in self.deliveries]

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [d.body for d in self.deliveries]

    async def wait_for(self, count: int, *, within: float = 20.0) -> list[dict[str, Any]]:
        """The bodies received, once there are at least `count` of them."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            bodies = self.bodies()
            if len(bodies) >= count:
                return bodies
            await asyncio.sleep(0.05)
        raise AssertionError(f"received {len(self.bodies())} notification(s), expected {count}")


def _handler(receiver: Receiver, verifier: Webhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                receiver.attempts += 1
                answer = receiver.script.pop(0) if receiver.script else "ok"
            try:
                payload = verifier.verify(body, dict(self.headers.items()))
            except WebhookVerificationError as exc:
                with receiver.lock:
                    receiver.refused.append(str(exc))
                self._answer(400)
                return
            if answer == "hang":
                time.sleep(receiver.hang_seconds)
                self._answer(200)
                return
            if answer == "fail":
                self._answer(500)
                return
            with receiver.lock:
                receiver.deliveries.append(
                    Delivery(
                        webhook_id=self.headers["webhook-id"],
                        timestamp=self.headers["webhook-timestamp"],
                        body=payload,
                    )
                )
            self._answer(204)

        def _answer(self, status: int) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up waiting (the timeout case)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Placeholder(BaseHTTPRequestHandler):
    """Replaced by the real handler once the server's port is known."""


@contextmanager
def receiving() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Placeholder)
    port = server.server_address[1]
    found = Receiver(url=f"http://127.0.0.1:{port}/hooks/access")
    server.RequestHandlerClass = _handler(found, Webhook(NOTIFY_SECRET))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
